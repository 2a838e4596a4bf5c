"""Balance, credits, coupons, refunds, bank transfers from camt.054/053 files."""

from datetime import date
from decimal import Decimal

import pytest

from accounts.errors import Conflict
from billing import ledger
from billing.actions import (
    do_add_credit,
    do_assign_bank_entry,
    do_cancel_bill,
    do_open_order,
    do_redeem_coupon,
    do_refund,
    do_return_bank_entry,
)
from billing.bank_import import import_statement
from billing.camt import CamtError, parse
from billing.choices import BankEntryState, BillState, PaymentMethodKind, RefundVia
from billing.models import BankEntry, BankStatement, Bill, Coupon, JournalEntry, Payment
from billing.run import run_billing
from billing.tests.camt_files import camt053, camt054, credit, entry
from billing.tests.conftest import FEB, JAN, at

D = Decimal


@pytest.fixture
def january_bill(alice_project, swiss_account):
    do_open_order(alice_project, "vm", cores=2, memory_mib=2048, disk_mib=20480, starts_at=at(2024, 12, 1))
    run_billing(JAN, today=date(2025, 2, 1))
    bill = Bill.objects.get(account=swiss_account, period_start=JAN)
    assert bill.total == D("18.38")
    return bill


def test_a_credit_pays_the_open_bill_and_the_rest_stays_in_the_balance(january_bill, staff):
    account = january_bill.account
    do_add_credit(staff, account, D("20.00"), "goodwill")
    january_bill.refresh_from_db()
    assert january_bill.state == BillState.PAID
    assert ledger.balance(account) == D("1.62")
    assert ledger.available_credit(account) == D("1.62")


def test_a_credit_needs_a_reason(january_bill, staff):
    with pytest.raises(Conflict):
        do_add_credit(staff, january_bill.account, D("5.00"), " ")


def test_a_prepaid_balance_pays_the_next_bill_when_it_is_made(alice_project, swiss_account, staff):
    do_add_credit(staff, swiss_account, D("50.00"), "prepaid")
    do_open_order(alice_project, "vm", cores=2, memory_mib=2048, disk_mib=20480, starts_at=at(2024, 12, 1))
    run_billing(JAN, today=date(2025, 2, 1))
    run_billing(FEB, today=date(2025, 3, 1))
    assert list(swiss_account.bills.order_by("number").values_list("state", flat=True)) == [BillState.PAID] * 2
    assert ledger.balance(swiss_account) == D("50.00") - 2 * D("18.38")


def test_coupons_are_redeemed_once(january_bill, alice):
    Coupon.objects.create(code="WELCOME", amount=D("10.00"), max_redemptions=5)
    payment = do_redeem_coupon(alice, january_bill.account, "welcome")
    assert payment.method == PaymentMethodKind.COUPON
    with pytest.raises(Conflict):
        do_redeem_coupon(alice, january_bill.account, "WELCOME")
    with pytest.raises(Conflict):
        do_redeem_coupon(alice, january_bill.account, "NOPE")
    january_bill.refresh_from_db()
    assert january_bill.state == BillState.OPEN  # 10 of 18.38: waits in the balance
    assert ledger.balance(january_bill.account) == D("-8.38")


def test_only_unused_money_can_be_refunded(january_bill, staff):
    account = january_bill.account
    do_add_credit(staff, account, D("30.00"), "overpaid")
    with pytest.raises(Conflict):
        do_refund(staff, account, D("12.00"), via=RefundVia.BANK_TRANSFER, note="too much")
    do_refund(staff, account, D("11.62"), via=RefundVia.BANK_TRANSFER, note="rest back")
    assert ledger.balance(account) == D("0.00")


def test_cancelling_a_bill_reverses_it_and_it_is_not_billed_again(january_bill, staff):
    do_cancel_bill(staff, january_bill, "wrong price")
    assert ledger.balance(january_bill.account) == D("0.00")
    with pytest.raises(Conflict):
        do_cancel_bill(staff, january_bill, "twice")
    assert run_billing(JAN, today=date(2025, 2, 1)).bills_created == 0
    assert JournalEntry.objects.filter(bill=january_bill).count() == 2


def test_camt054_matched_partial_over_unmatched_duplicate_and_debit(january_bill, make_customer, staff):
    _, project, other = make_customer("dora", country="CH")
    do_open_order(project, "ipv4", starts_at=at(2024, 12, 1))
    run_billing(JAN, today=date(2025, 2, 1))
    dora_bill = other.bills.get()
    assert dora_bill.total == D("2.16")
    document = camt054([
        entry([credit("18.38", january_bill.reference, ref_id="TX-1"),
               credit("1.00", dora_bill.reference, ref_id="TX-2", name="Dora"),          # partial
               credit("99.00", "", ref_id="TX-3", name="Unknown sender")], entry_ref="E1"),  # unmatched
        entry([credit("5.00", dora_bill.reference, ref_id="TX-4", name="Dora")], entry_ref="E2"),  # the rest and more
        entry([credit("7.00", "", ref_id="TX-5", indicator="DBIT")], indicator="DBIT", entry_ref="E3"),  # fee
    ])
    statement, created = import_statement(staff, "feb.xml", document)
    assert created
    assert (statement.entries_total, statement.entries_matched, statement.entries_unmatched) == (5, 3, 1)
    january_bill.refresh_from_db()
    dora_bill.refresh_from_db()
    assert january_bill.state == BillState.PAID
    assert dora_bill.state == BillState.PAID  # 1.00 + 5.00 covered 2.16
    assert ledger.balance(other) == D("3.84")  # the over-payment waits for the next bill
    unmatched = BankEntry.objects.get(state=BankEntryState.UNMATCHED)
    assert unmatched.amount == D("99.00") and unmatched.debtor_name == "Unknown sender"
    assert BankEntry.objects.get(entry_key="TX-5").state == BankEntryState.IGNORED

    # The same file again changes nothing; so does the day's camt.053 reporting the same transactions.
    payments = Payment.objects.count()
    again, created = import_statement(staff, "feb-again.xml", document)
    assert (again.pk, created) == (statement.pk, False)
    statement_053, created = import_statement(staff, "statement.xml", camt053([
        entry([credit("18.38", january_bill.reference, ref_id="TX-1")], entry_ref="E1"),
    ]))
    assert created and statement_053.entries_duplicate == 1 and statement_053.entries_matched == 0
    assert Payment.objects.count() == payments and BankStatement.objects.count() == 2


def test_partial_payment_alone_leaves_the_bill_open(january_bill, staff):
    import_statement(staff, "p.xml", camt054([entry([credit("10.00", january_bill.reference, ref_id="P1")])]))
    january_bill.refresh_from_db()
    assert january_bill.state == BillState.OPEN
    assert ledger.balance(january_bill.account) == D("-8.38")


def test_staff_assign_or_return_unmatched_entries(january_bill, staff):
    import_statement(staff, "u.xml", camt054([entry([
        credit("18.38", "", ref_id="U1", name="Alice AG", unstructured="Invoice January, thanks"),
        credit("3.00", "", ref_id="U2", name="Mistake"),
    ])]))
    first, second = BankEntry.objects.get(entry_key="U1"), BankEntry.objects.get(entry_key="U2")
    assert first.state == second.state == BankEntryState.UNMATCHED
    do_assign_bank_entry(staff, first, january_bill.account, january_bill)
    with pytest.raises(Conflict):
        do_assign_bank_entry(staff, first, january_bill.account)
    do_return_bank_entry(staff, second, "sent back")
    january_bill.refresh_from_db()
    assert january_bill.state == BillState.PAID
    assert BankEntry.objects.get(entry_key="U2").state == BankEntryState.RETURNED


def test_reference_in_the_free_text_is_matched_too(january_bill, staff, settings):
    text = f"Bill {january_bill.reference[:10]} {january_bill.reference[10:]}"
    import_statement(staff, "t.xml", camt054([entry([credit("18.38", "", ref_id="T1", unstructured=text)])]))
    january_bill.refresh_from_db()
    assert january_bill.state == BillState.PAID


@pytest.mark.parametrize("document, message", [
    (b"<Document", "well-formed"),
    (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><Document>&x;</Document>', "DTD"),
    (b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"/>', "camt"),
    (camt054([entry([credit("12.345", "", ref_id="X")])]), "two decimals"),
    (camt054([entry([credit("-5", "", ref_id="X")])]), "positive"),
    (camt054([entry([credit("5", "", ref_id="X")], indicator="XXXX")]), "CdtDbtInd"),
])
def test_bad_files_are_refused_with_a_clear_error_and_nothing_written(staff, document, message):
    with pytest.raises(CamtError, match=message):
        import_statement(staff, "bad.xml", document)
    assert not BankStatement.objects.exists() and not BankEntry.objects.exists()


def test_parser_reads_every_version_and_batch_entries():
    for version in ("02", "04", "08"):
        parsed = parse(camt054([entry([credit("1.00", "", ref_id="A"), credit("2.50", "", ref_id="B")])],
                               version=version))
        assert [e.amount for e in parsed.entries] == [D("1.00"), D("2.50")]
        assert parsed.entries[0].debtor_name == "Alice AG"
