from decimal import Decimal

from django import forms

from billing.choices import RefundVia
from billing.countries import clean_country, clean_vat_number
from billing.models import BillingAccount


class BillingAddressForm(forms.ModelForm):
    class Meta:
        model = BillingAccount
        fields = ["name", "street", "house_number", "postal_code", "city", "country", "vat_number", "email"]

    def clean_country(self):
        try:
            return clean_country(self.cleaned_data["country"])
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None

    def clean(self):
        data = super().clean()
        if "country" in data:
            try:
                data["vat_number"] = clean_vat_number(data["country"], data.get("vat_number") or "")
            except ValueError as error:
                self.add_error("vat_number", str(error))
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
