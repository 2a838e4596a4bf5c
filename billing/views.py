"""Portal pages of billing (customers see their own account only) and staff pages for bank files."""

from datetime import timedelta

import stripe
from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from accounts.csp import uses_stripe_js
from accounts.errors import Conflict
from billing import actions, cards, ledger, stripe_payments
from billing.bank_import import import_statement, start_background_import
from billing.camt import CamtError
from billing.choices import BankEntryState, RefundVia
from billing.forms import (
    AssignEntryForm,
    BillingAddressForm,
    CouponForm,
    CreditForm,
    RefundForm,
    ReturnEntryForm,
    StatementUploadForm,
)
from billing.models import BankEntry, BankImport, BankStatement, Bill, BillingAccount, CardPaymentMethod, Payment
from billing.pdf import qr_bill_svg, render_pdf
from billing.references import compact_iban, format_reference
from billing.spending import spending


def _own_bill(request, uuid) -> Bill:
    # A bill is the account holder's business: anybody else, project members included, gets 404.
    return get_object_or_404(Bill.objects.select_related("account"), uuid=uuid, account__owner=request.user)


@login_required
def overview(request):
    account = actions.account_of_user(request.user)
    context = {
        "account": account,
        "balance": ledger.balance(account),
        "bills": account.bills.all()[:50],
        "payments": account.payments.all()[:20],
        "refunds": account.refunds.all()[:20],
        "spending": spending(account),
        "cards": account.cards.filter(removed_at__isnull=True),
        "coupon_form": CouponForm(),
        "stripe_enabled": stripe_payments.enabled(),
        "suspended_vms": account.suspended_vms.filter(resumed_at__isnull=True).select_related("vm"),
    }
    return render(request, "billing/overview.html", context)


@login_required
def account_edit(request):
    account = actions.account_of_user(request.user)
    form = BillingAddressForm(request.POST or None, instance=BillingAccount.objects.get(pk=account.pk))
    if request.method == "POST" and form.is_valid():
        actions.do_update_billing_address(request.user, account, **{
            name: form.cleaned_data[name] for name in form.Meta.fields
        })
        messages.success(request, "Billing address saved.")
        return redirect("billing:overview")
    return render(request, "billing/account_form.html", {"form": form})


@login_required
def bill_detail(request, uuid):
    bill = _own_bill(request, uuid)
    open_amount = ledger.open_amount(bill)
    context = {
        "bill": bill, "lines": bill.lines.all(), "reference": format_reference(bill.reference),
        "open_amount": open_amount, "covered": bill.total - open_amount,
        "iban": compact_iban(settings.UNCLOUD_BILLING_IBAN), "creditor": settings.UNCLOUD_BILLING_CREDITOR_NAME,
        "stripe_enabled": stripe_payments.enabled(), "has_qr_bill": qr_bill_svg(bill) is not None,
    }
    return render(request, "billing/bill_detail.html", context)


@login_required
def bill_pdf(request, uuid):
    bill = _own_bill(request, uuid)
    response = HttpResponse(render_pdf(bill), content_type="application/pdf")
    response["Content-Disposition"] = f'inline; filename="bill-{bill.number}.pdf"'
    return response


@login_required
def bill_qr_svg(request, uuid):
    svg = qr_bill_svg(_own_bill(request, uuid))
    if svg is None:
        return HttpResponse("This bill has no QR-bill.", status=404, content_type="text/plain")
    response = HttpResponse(svg, content_type="image/svg+xml")
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return response


@login_required
@uses_stripe_js
def bill_pay(request, uuid):
    bill = _own_bill(request, uuid)
    if not bill.is_unpaid:
        messages.info(request, "This bill is not open.")
        return redirect("billing:bill", uuid=bill.uuid)
    card = bill.account.cards.filter(is_default=True, removed_at__isnull=True).first()
    context = {"bill": bill, "card": card, "publishable_key": settings.STRIPE_PUBLISHABLE_KEY,
               "stripe_js_url": settings.STRIPE_JS_URL,
               "return_url": request.build_absolute_uri(reverse("billing:bill_paid", args=[bill.uuid]))}
    unavailable = "Card payments are not available right now ({}). Please pay by bank transfer."
    if card is not None:
        # A saved card is charged by the server when the customer presses "pay" (a POST, so no page load
        # charges anything); Stripe.js is needed only when the bank asks for 3-D Secure.
        if request.method != "POST":
            return render(request, "billing/stripe_pay.html", context)
        try:
            intent = cards.pay_now_with_card(bill, card)
        except stripe_payments.CardError as error:
            messages.error(request, str(error))
            return redirect("billing:bill", uuid=bill.uuid)
        except (stripe_payments.StripeUnavailable, stripe.StripeError) as error:
            messages.error(request, unavailable.format(error))
            return redirect("billing:bill", uuid=bill.uuid)
        if intent is None:
            messages.info(request, "This bill is not open.")
        elif intent["status"] == "succeeded":
            messages.success(request, "Thank you: your payment went through.")
        elif intent["status"] == "requires_action":
            return render(request, "billing/stripe_pay.html", {**context, "client_secret": intent["client_secret"],
                                                               "authenticate": True})
        else:
            messages.error(request, "The payment did not go through. Please try again or pay by bank transfer.")
        return redirect("billing:bill", uuid=bill.uuid)
    try:
        intent = cards.start_pay_now(bill)
    except stripe_payments.CardError as error:
        messages.error(request, str(error))
        return redirect("billing:bill", uuid=bill.uuid)
    except (stripe_payments.StripeUnavailable, stripe.StripeError) as error:
        messages.error(request, unavailable.format(error))
        return redirect("billing:bill", uuid=bill.uuid)
    return render(request, "billing/stripe_pay.html", {**context, "client_secret": intent.client_secret})


@login_required
def bill_paid(request, uuid):
    bill = _own_bill(request, uuid)
    intent_id = request.GET.get("payment_intent", "")
    if not intent_id.startswith("pi_"):
        return HttpResponseBadRequest("payment_intent missing")
    try:
        cards.finish_pay_now(bill, intent_id)
        messages.success(request, "Thank you: your payment went through.")
    except stripe_payments.CardError as error:
        messages.error(request, str(error))
    except (stripe_payments.StripeUnavailable, stripe.StripeError) as error:
        messages.error(request, f"We could not check the payment right now ({error}); it shows here once Stripe "
                                "tells us.")
    return redirect("billing:bill", uuid=bill.uuid)


@login_required
@uses_stripe_js
def card_add(request):
    account = actions.account_of_user(request.user)
    try:
        intent = cards.start_card_setup(account)
    except (stripe_payments.StripeUnavailable, stripe.StripeError) as error:
        messages.error(request, f"Cards cannot be added right now ({error}).")
        return redirect("billing:overview")
    return render(request, "billing/stripe_card.html", {
        "client_secret": intent.client_secret, "publishable_key": settings.STRIPE_PUBLISHABLE_KEY,
        "stripe_js_url": settings.STRIPE_JS_URL,
        "return_url": request.build_absolute_uri(reverse("billing:card_added")),
    })


@login_required
def card_added(request):
    account = actions.account_of_user(request.user)
    setup_intent = request.GET.get("setup_intent", "")
    if not setup_intent.startswith("seti_"):
        return HttpResponseBadRequest("setup_intent missing")
    try:
        card = cards.finish_card_setup(account, setup_intent)
        messages.success(request, f"Card {card} saved. Bills are charged to it automatically.")
    except stripe_payments.CardError as error:
        messages.error(request, str(error))
    except (stripe_payments.StripeUnavailable, stripe.StripeError) as error:
        messages.error(request, f"We could not save the card ({error}).")
    return redirect("billing:overview")


@login_required
@require_POST
def card_remove(request, uuid):
    card = get_object_or_404(CardPaymentMethod, uuid=uuid, account__owner=request.user, removed_at__isnull=True)
    try:
        cards.remove_card(request.user, card)
        messages.success(request, f"Card {card} removed.")
    except (stripe_payments.StripeUnavailable, stripe.StripeError) as error:
        messages.error(request, f"We could not remove the card ({error}).")
    return redirect("billing:overview")


@login_required
@require_POST
def coupon_redeem(request):
    form = CouponForm(request.POST)
    if form.is_valid():
        try:
            payment = actions.do_redeem_coupon(request.user, actions.account_of_user(request.user),
                                               form.cleaned_data["code"])
            messages.success(request, f"{payment.amount} {payment.currency} credited.")
        except Conflict as error:
            messages.error(request, str(error))
    else:
        messages.error(request, "Enter a coupon code.")
    return redirect("billing:overview")


@csrf_exempt
@require_POST
def stripe_webhook(request):
    if not settings.STRIPE_WEBHOOK_SECRET:
        return HttpResponse("webhooks are not configured", status=404, content_type="text/plain")
    try:
        event = stripe_payments.verified_event(request.body, request.headers.get("Stripe-Signature", ""))
    except (ValueError, UnicodeDecodeError):
        return HttpResponseBadRequest("not a Stripe event")
    except stripe.SignatureVerificationError:
        return HttpResponseBadRequest("bad signature")
    try:
        processed = cards.handle_event(event)
    except cards.EventRefused as error:
        return HttpResponseBadRequest(str(error))
    except (stripe.APIConnectionError, stripe_payments.StripeUnavailable):
        # Nothing was recorded; Stripe sends the event again later.
        return HttpResponse("try again later", status=503, content_type="text/plain")
    return HttpResponse("ok" if processed else "seen before", content_type="text/plain")


# Staff -------------------------------------------------------------------------------------------

@staff_member_required
def staff_bank(request):
    form = StatementUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        if upload.size > settings.UNCLOUD_BILLING_INLINE_IMPORT_BYTES:
            # A month of a busy account (20 MiB, 20k entries) takes longer than a web request may.
            bank_import = start_background_import(request.user, upload.name, upload.read())
            messages.info(request, f"{bank_import.filename} is being imported in the background; its progress "
                                   "shows below.")
            return redirect("billing:staff_bank")
        try:
            statement, created = import_statement(request.user, upload.name, upload.read())
        except CamtError as error:
            form.add_error("file", str(error))
        else:
            if created:
                messages.success(request, f"{statement}: {statement.entries_matched} matched, "
                                          f"{statement.entries_unmatched} unmatched, "
                                          f"{statement.entries_duplicate} seen before.")
            else:
                messages.info(request, "This file was imported before; nothing changed.")
            return redirect("billing:staff_bank")
    context = {
        "form": form, "statements": BankStatement.objects.all()[:20],
        "imports": BankImport.objects.exclude(state=BankImport.State.DONE, finished_at__lt=timezone.now()
                                              - timedelta(days=1)).defer("data")[:10],
        "unmatched": BankEntry.objects.filter(state=BankEntryState.UNMATCHED).order_by("created"),
        "awaiting": BankEntry.objects.filter(state=BankEntryState.AWAITING_DETAILS).order_by("created"),
        "assign_form": AssignEntryForm(), "return_form": ReturnEntryForm(),
    }
    return render(request, "billing/staff_bank.html", context)


@staff_member_required
@require_POST
def staff_entry(request, uuid):
    entry = get_object_or_404(BankEntry, uuid=uuid)
    try:
        if request.POST.get("action") == "return":
            form = ReturnEntryForm(request.POST)
            if not form.is_valid():
                raise Conflict("Say why the transfer goes back.")
            actions.do_return_bank_entry(request.user, entry, form.cleaned_data["note"])
            messages.success(request, "Marked as returned to the sender.")
        else:
            form = AssignEntryForm(request.POST)
            if not form.is_valid():
                raise Conflict("Name the customer.")
            matches = list(actions.accounts_matching(form.cleaned_data["customer"])[:2])
            if len(matches) != 1:
                raise Conflict("No single customer matches that name.")
            bill = None
            if form.cleaned_data["bill_number"]:
                bill = Bill.objects.filter(number=form.cleaned_data["bill_number"]).first()
                if bill is None:
                    raise Conflict("There is no such bill.")
            actions.do_assign_bank_entry(request.user, entry, matches[0], bill, form.cleaned_data["note"])
            messages.success(request, f"Assigned to {matches[0]}.")
    except Conflict as error:
        messages.error(request, str(error))
    return redirect("billing:staff_bank")


@staff_member_required
def staff_account(request, uuid):
    account = get_object_or_404(BillingAccount, uuid=uuid)
    credit_form, refund_form = CreditForm(), RefundForm()
    if request.method == "POST":
        try:
            if request.POST.get("action") == "refund":
                refund_form = RefundForm(request.POST)
                if refund_form.is_valid():
                    data = refund_form.cleaned_data
                    payment = Payment.objects.filter(uuid=data["payment"], account=account).first() \
                        if data["payment"] else None
                    if data["via"] == RefundVia.CARD and payment is None:
                        raise Conflict("Choose the card payment to refund.")
                    actions.do_refund(request.user, account, data["amount"], via=data["via"], note=data["note"],
                                      payment=payment)
                    messages.success(request, "Refund recorded.")
                    return redirect("billing:staff_account", uuid=account.uuid)
            else:
                credit_form = CreditForm(request.POST)
                if credit_form.is_valid():
                    actions.do_add_credit(request.user, account, credit_form.cleaned_data["amount"],
                                          credit_form.cleaned_data["note"])
                    messages.success(request, "Credit added.")
                    return redirect("billing:staff_account", uuid=account.uuid)
        except Conflict as error:
            messages.error(request, str(error))
        except (stripe_payments.StripeUnavailable, stripe.StripeError) as error:
            messages.error(request, f"Stripe refused the refund: {error}")
    context = {
        "account": account, "balance": ledger.balance(account), "available": ledger.available_credit(account),
        "bills": account.bills.all()[:50], "payments": account.payments.all()[:50],
        "refunds": account.refunds.all()[:50], "credit_form": credit_form, "refund_form": refund_form,
    }
    return render(request, "billing/staff_account.html", context)
