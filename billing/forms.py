import re
from decimal import Decimal

from django import forms

from billing.choices import EU_COUNTRIES, RefundVia
from billing.models import BillingAccount


class BillingAddressForm(forms.ModelForm):
    class Meta:
        model = BillingAccount
        fields = ["name", "street", "house_number", "postal_code", "city", "country", "vat_number", "email"]

    def clean_country(self):
        country = self.cleaned_data["country"].strip().upper()
        if not re.fullmatch(r"[A-Z]{2}", country):
            raise forms.ValidationError("Use the two-letter ISO code of the country (CH, DE, US ...).")
        return country

    def clean(self):
        data = super().clean()
        vat_number = (data.get("vat_number") or "").strip().upper().replace(" ", "")
        country = data.get("country", "")
        if vat_number and country in EU_COUNTRIES and not re.fullmatch(r"[A-Z]{2}[0-9A-Z+*.]{2,13}", vat_number):
            self.add_error("vat_number", "This does not look like an EU VAT number (e.g. DE123456789).")
        data["vat_number"] = vat_number
        return data


class CouponForm(forms.Form):
    code = forms.CharField(max_length=40)


class StatementUploadForm(forms.Form):
    file = forms.FileField(help_text="camt.054 or camt.053 XML from your bank")


class AssignEntryForm(forms.Form):
    customer = forms.CharField(max_length=150, help_text="User name, e-mail or billing name")
    bill_number = forms.IntegerField(required=False, min_value=1)
    note = forms.CharField(max_length=300, required=False)


class ReturnEntryForm(forms.Form):
    note = forms.CharField(max_length=300)


class CreditForm(forms.Form):
    amount = forms.DecimalField(max_digits=12, decimal_places=2, min_value=Decimal("0.01"))
    note = forms.CharField(max_length=300)


class RefundForm(forms.Form):
    amount = forms.DecimalField(max_digits=12, decimal_places=2, min_value=Decimal("0.01"))
    via = forms.ChoiceField(choices=RefundVia.choices)
    payment = forms.UUIDField(required=False, help_text="The card payment to refund (card refunds only)")
    note = forms.CharField(max_length=300)
