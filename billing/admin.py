"""Staff views of the money: most rows are read-only here because they are changed by actions
(a credit, a refund, a cancelled bill), which book them in the ledger."""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from accounts.errors import Conflict
from billing import actions, ledger
from billing.models import (
    BankEntry,
    BankStatement,
    Bill,
    BillingAccount,
    BillLine,
    CardCharge,
    CardPaymentMethod,
    Coupon,
    DunningEvent,
    JournalEntry,
    Order,
    Payment,
    Posting,
    Price,
    Product,
    Refund,
    SuspendedVM,
    VatRate,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class PriceInline(admin.TabularInline):
    model = Price
    extra = 0
    fields = ["valid_from", "currency", "amount", "per_core", "per_memory_gib", "per_disk_gib"]

    def has_change_permission(self, request, obj=None):
        return False  # a new price is a new row with a later valid_from; old orders keep theirs

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "kind", "period", "unit", "active"]
    inlines = [PriceInline]


@admin.register(VatRate)
class VatRateAdmin(admin.ModelAdmin):
    list_display = ["country", "rate_percent", "valid_from", "note"]
    list_filter = ["country"]


@admin.register(BillingAccount)
class BillingAccountAdmin(admin.ModelAdmin):
    list_display = ["__str__", "owner", "country", "vat_number", "vat_verified_at", "balance", "suspended_at",
                    "termination_requested_at"]
    list_filter = ["country", ("vat_verified_at", admin.EmptyFieldListFilter),
                   ("suspended_at", admin.EmptyFieldListFilter),
                   ("termination_requested_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "owner__username", "owner__email", "vat_number"]
    readonly_fields = ["uuid", "owner", "stripe_customer_id", "suspended_at", "termination_requested_at", "links",
                       "vat_verified_at", "vat_verified_by"]
    actions = ["verify_vat_numbers"]

    @admin.action(description="VAT number checked (VIES or registry): reverse charge from the next bill")
    def verify_vat_numbers(self, request, queryset):
        from billing.actions import do_verify_vat_number

        done = 0
        for account in queryset.exclude(vat_number=""):
            do_verify_vat_number(request.user, account, note="admin")
            done += 1
        self.message_user(request, f"{done} VAT number(s) marked verified.")

    @admin.display(description="Balance")
    def balance(self, obj):
        return ledger.balance(obj)

    @admin.display(description="Credits and refunds")
    def links(self, obj):
        return format_html('<a href="{}">Credit, refund, history</a>', reverse("billing:staff_account", args=[obj.uuid]))


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ["description", "account", "project", "product", "amount", "starts_at", "ends_at"]
    list_filter = ["product", ("ends_at", admin.EmptyFieldListFilter)]
    search_fields = ["description", "resource_uuid", "account__owner__username"]


class BillLineInline(admin.TabularInline):
    model = BillLine
    extra = 0
    can_delete = False
    fields = ["description", "period_start", "period_end", "quantity", "unit_amount", "amount"]
    readonly_fields = fields


@admin.register(Bill)
class BillAdmin(ReadOnlyAdmin):
    list_display = ["number", "account", "period_start", "total", "currency", "state", "due_on", "pdf"]
    list_filter = ["state", "period_start", "vat_treatment"]
    search_fields = ["number", "reference", "account__owner__username", "account__name"]
    inlines = [BillLineInline]
    actions = ["cancel_bills"]

    @admin.display(description="PDF")
    def pdf(self, obj):
        return format_html('<a href="{}">PDF</a>', reverse("admin:billing_bill_pdf", args=[obj.pk]))

    def get_urls(self):
        from django.urls import path

        return [path("<int:pk>/pdf/", self.admin_site.admin_view(self.pdf_view), name="billing_bill_pdf")] + \
            super().get_urls()

    def pdf_view(self, request, pk):
        from django.http import HttpResponse
        from django.shortcuts import get_object_or_404

        from billing.pdf import render_pdf

        bill = get_object_or_404(Bill, pk=pk)
        return HttpResponse(render_pdf(bill), content_type="application/pdf")

    @admin.action(description="Cancel the selected unpaid bills")
    def cancel_bills(self, request, queryset):
        for bill in queryset:
            try:
                actions.do_cancel_bill(request.user, bill, "cancelled by staff in the admin")
            except Conflict as error:
                self.message_user(request, f"Bill {bill.number}: {error}", messages.ERROR)


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "account", "method", "amount", "currency", "bill", "note"]
    list_filter = ["method"]
    search_fields = ["account__owner__username", "stripe_payment_intent", "note"]


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ["created", "account", "amount", "via", "note", "created_by"]


@admin.register(Coupon)
class CouponAdmin(admin.ModelAdmin):
    list_display = ["code", "amount", "currency", "valid_until", "max_redemptions", "active"]


@admin.register(BankStatement)
class BankStatementAdmin(ReadOnlyAdmin):
    list_display = ["created", "filename", "kind", "message_id", "entries_total", "entries_matched",
                    "entries_unmatched", "entries_duplicate"]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "title": "Bank statements (import them at /billing/staff/bank/)"}
        return super().changelist_view(request, extra_context)


@admin.register(BankEntry)
class BankEntryAdmin(ReadOnlyAdmin):
    list_display = ["booking_date", "amount", "currency", "debtor_name", "reference", "state", "bill", "account"]
    list_filter = ["state", "is_credit"]
    search_fields = ["reference", "debtor_name", "debtor_iban", "remittance_info"]


class PostingInline(admin.TabularInline):
    model = Posting
    extra = 0
    can_delete = False
    fields = ["ledger_account", "account", "amount", "currency"]
    readonly_fields = fields


@admin.register(JournalEntry)
class JournalEntryAdmin(ReadOnlyAdmin):
    list_display = ["created", "kind", "memo"]
    list_filter = ["kind"]
    inlines = [PostingInline]


@admin.register(CardPaymentMethod)
class CardPaymentMethodAdmin(ReadOnlyAdmin):
    list_display = ["account", "brand", "last4", "exp_month", "exp_year", "is_default", "removed_at"]


@admin.register(CardCharge)
class CardChargeAdmin(ReadOnlyAdmin):
    list_display = ["created", "bill", "amount", "off_session", "state", "error_code", "error_message"]
    list_filter = ["state"]


@admin.register(DunningEvent)
class DunningEventAdmin(ReadOnlyAdmin):
    list_display = ["created", "account", "bill", "step", "level", "detail"]
    list_filter = ["step"]


@admin.register(SuspendedVM)
class SuspendedVMAdmin(ReadOnlyAdmin):
    list_display = ["vm", "account", "suspended_at", "resumed_at"]
