"""The monthly billing run: proration, VAT, numbering, idempotency, concurrency."""

import threading
from datetime import date
from decimal import Decimal

import pytest
from django.db import connection

from accounts.errors import Conflict
from billing import ledger
from billing.actions import do_close_order, do_open_order, do_replace_order, do_verify_vat_number
from billing.choices import BillState, VatTreatment
from billing.models import Bill, BillLine, BillNumberSequence, Order
from billing.references import is_qr_iban, qrr_reference, scor_reference
from billing.run import run_billing
from billing.tests.conftest import FEB, JAN, MAR, at

D = Decimal


def vm_order(project, *, starts_at, cores=2, memory_mib=2048, disk_mib=20480, product="vm", **kwargs):
    return do_open_order(project, product, cores=cores, memory_mib=memory_mib, disk_mib=disk_mib,
                         starts_at=starts_at, resource_kind="vm", description="VM web1", **kwargs)


def test_a_whole_month_costs_the_monthly_price(alice_project, swiss_account):
    order = vm_order(alice_project, starts_at=at(2024, 12, 15))
    # 2 cores * 5.00 + 2 GiB * 2.50 + 20 GiB * 0.10
    assert order.amount == D("17.00")
    run_billing(JAN, today=date(2025, 2, 1))
    bill = Bill.objects.get(account=swiss_account, period_start=JAN)
    [line] = bill.lines.all()
    assert line.quantity == D(1) and line.amount == D("17.00")


def test_a_vm_started_mid_month_pays_its_share(alice_project, swiss_account):
    # January 2025 has 31 days; from the 17th 00:00 that is 15 days.
    vm_order(alice_project, starts_at=at(2025, 1, 17))
    run_billing(JAN, today=date(2025, 2, 1))
    [line] = Bill.objects.get(period_start=JAN).lines.all()
    assert line.quantity == (D(15) / D(31)).quantize(D("0.000001"))
    assert line.amount == D("8.23")  # 17.00 * 15/31 = 8.2258


def test_an_upgrade_is_charged_prorated_old_then_new(alice_project, swiss_account):
    order = vm_order(alice_project, starts_at=at(2024, 12, 1))
    upgraded = do_replace_order(order, at=at(2025, 1, 11), cores=4)  # 10 days small, 21 days big
    assert upgraded.replaces_id == order.pk and upgraded.amount == D("27.00")
    order.refresh_from_db()
    assert order.ends_at == at(2025, 1, 11)
    run_billing(JAN, today=date(2025, 2, 1))
    amounts = sorted(Bill.objects.get(period_start=JAN).lines.values_list("amount", flat=True))
    assert amounts == [D("5.48"), D("18.29")]  # 17 * 10/31 = 5.4839; 27 * 21/31 = 18.2903
    run_billing(FEB, today=date(2025, 3, 1))
    assert list(Bill.objects.get(period_start=FEB).lines.values_list("amount", flat=True)) == [D("27.00")]


def test_a_deleted_resource_stops_costing_from_its_end(alice_project, swiss_account, settings):
    settings.UNCLOUD_BILLING_MINIMUM_BILL = "0"  # the line is what this is about (tiny bills: test_money_edges)
    order = vm_order(alice_project, starts_at=at(2024, 12, 1), resource_uuid="5b1c3a52-0000-4000-8000-000000000001")
    assert do_close_order(order.resource_uuid, ends_at=at(2025, 1, 1, 12)) == 1
    assert do_close_order(order.resource_uuid, ends_at=at(2025, 1, 2)) == 0  # closed once
    run_billing(JAN, today=date(2025, 2, 1))
    [line] = Bill.objects.get(period_start=JAN).lines.all()
    assert line.amount == D("0.27")  # 12 hours of 744: 17 * 0.016129 = 0.2742
    run_billing(FEB, today=date(2025, 3, 1))
    assert not Bill.objects.filter(period_start=FEB).exists()


def test_hourly_usage_counts_started_hours_without_double_counting_month_ends(alice_project, swiss_account,
                                                                            settings):
    settings.UNCLOUD_BILLING_MINIMUM_BILL = "0"
    # 100 GiB of snapshots from Jan 31 23:30 to Feb 1 01:10: hours started 00:30..., 2 in all, not 3.
    do_open_order(alice_project, "snapshot", quantity=100, starts_at=at(2025, 1, 31, 23, 30),
                  resource_uuid="5b1c3a52-0000-4000-8000-000000000002")
    do_close_order("5b1c3a52-0000-4000-8000-000000000002", ends_at=at(2025, 2, 1, 1, 10))
    run_billing(JAN, today=date(2025, 3, 1))
    run_billing(FEB, today=date(2025, 3, 1))
    jan = BillLine.objects.get(bill__period_start=JAN)
    feb = BillLine.objects.get(bill__period_start=FEB)
    assert (jan.quantity, feb.quantity) == (D(1), D(1))
    assert jan.amount == D("0.01")  # 100 GiB * 0.0001 per GiB-hour


def test_one_time_and_yearly_products(alice_project, swiss_account):
    do_open_order(alice_project, "setup-fee", starts_at=at(2025, 1, 5))
    do_open_order(alice_project, "membership", starts_at=at(2024, 2, 10))
    run_billing(JAN, today=date(2025, 3, 1))
    run_billing(FEB, today=date(2025, 3, 1))
    jan = Bill.objects.get(period_start=JAN)
    feb = Bill.objects.get(period_start=FEB)
    assert list(jan.lines.values_list("amount", flat=True)) == [D("20.00")]
    assert list(feb.lines.values_list("amount", flat=True)) == [D("35.00")]  # the second membership year


@pytest.mark.parametrize(
    "country, vat_number, treatment, rate, vat",
    [
        ("CH", "", VatTreatment.SWISS, D("8.10"), D("1.38")),
        ("LI", "", VatTreatment.SWISS, D("8.10"), D("1.38")),
        ("DE", "DE136695976", VatTreatment.EU_REVERSE_CHARGE, D("0.00"), D("0.00")),
        ("DE", "", VatTreatment.EU_CONSUMER, D("19.00"), D("3.23")),
        ("US", "", VatTreatment.NONE, D("0.00"), D("0.00")),
    ],
)
def test_vat_follows_the_billing_address(make_customer, country, vat_number, treatment, rate, vat):
    _, project, account = make_customer("dora", country=country, vat_number=vat_number)
    if vat_number:
        do_verify_vat_number(None, account)
    vm_order(project, starts_at=at(2024, 12, 1))
    run_billing(JAN, today=date(2025, 2, 1))
    bill = Bill.objects.get(account=account)
    assert (bill.vat_treatment, bill.vat_rate_percent, bill.subtotal, bill.vat_amount) == (treatment, rate,
                                                                                           D("17.00"), vat)
    assert bill.total == D("17.00") + vat
    if treatment == VatTreatment.EU_REVERSE_CHARGE:
        assert "DE136695976" in bill.vat_note and "Reverse charge" in bill.vat_note


def test_the_vat_rate_of_the_billed_month_applies(make_customer):
    _, project, account = make_customer("dora", country="CH")
    vm_order(project, starts_at=at(2023, 12, 1))
    run_billing(date(2023, 12, 1), today=date(2024, 2, 1))
    run_billing(JAN.replace(year=2024), today=date(2024, 2, 1))
    assert list(account.bills.order_by("period_start").values_list("vat_rate_percent", flat=True)) == [
        D("7.70"), D("8.10")]


def test_running_twice_creates_nothing_new(alice_project, swiss_account, make_customer):
    vm_order(alice_project, starts_at=at(2024, 12, 1))
    _, project, _ = make_customer("dora", country="CH")
    vm_order(project, starts_at=at(2024, 12, 1))
    first = run_billing(JAN, today=date(2025, 2, 1))
    postings_after_first = ledger.Posting.objects.count()
    second = run_billing(JAN, today=date(2025, 2, 1))
    assert (first.bills_created, second.bills_created) == (2, 0)
    assert Bill.objects.count() == 2 and BillLine.objects.count() == 2
    assert ledger.Posting.objects.count() == postings_after_first


def test_bill_numbers_and_references(alice_project, swiss_account, make_customer, settings):
    for name in ("dora", "emil", "fritz"):
        _, project, _ = make_customer(name, country="CH")
        vm_order(project, starts_at=at(2024, 12, 1))
    run_billing(JAN, today=date(2025, 2, 1), batch_size=2)
    bills = list(Bill.objects.order_by("number"))
    assert [bill.number for bill in bills] == [1, 2, 3]
    assert is_qr_iban(settings.UNCLOUD_BILLING_IBAN)
    assert [bill.reference for bill in bills] == [qrr_reference(n) for n in (1, 2, 3)]
    assert bills[0].due_on == date(2025, 3, 3)  # 30 days after issue
    assert BillNumberSequence.objects.get(name="bill").last_number == 3
    assert scor_reference(3).startswith("RF") and len(qrr_reference(3)) == 27


def test_a_month_that_is_not_over_is_not_billed(alice_project, swiss_account):
    with pytest.raises(ValueError):
        run_billing(JAN, today=date(2025, 1, 31))


def test_orders_cannot_start_in_a_billed_month(alice_project, swiss_account):
    order = vm_order(alice_project, starts_at=at(2024, 12, 1))
    run_billing(JAN, today=date(2025, 2, 1))
    with pytest.raises(Conflict):
        vm_order(alice_project, starts_at=at(2025, 1, 20))
    with pytest.raises(Conflict):
        do_replace_order(order, at=at(2025, 1, 20), cores=8)
    order.refresh_from_db()
    assert order.ends_at is None  # the failed upgrade left nothing behind


def test_orders_are_immutable(alice_project, swiss_account):
    order = vm_order(alice_project, starts_at=at(2024, 12, 1))
    order.cores = 64
    with pytest.raises(ValueError):
        order.save()


def test_bills_post_to_the_ledger(alice_project, swiss_account):
    vm_order(alice_project, starts_at=at(2024, 12, 1))
    run_billing(JAN, today=date(2025, 2, 1))
    assert ledger.balance(swiss_account) == D("-18.38")  # 17.00 + 8.1 % VAT, owed
    assert ledger.ledger_sum() == D("0.00")


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_runs_number_without_gaps_or_duplicates(make_customer):
    accounts = []
    for index in range(12):
        _, project, account = make_customer(f"user{index}", country="CH")
        vm_order(project, starts_at=at(2024, 12, 1))
        accounts.append(account)
    barrier = threading.Barrier(2)
    results, errors = [], []

    def run():
        try:
            barrier.wait()
            results.append(run_billing(JAN, today=date(2025, 2, 1), batch_size=3))
        except Exception as error:  # reported below; a thread's exception would vanish otherwise
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sum(result.bills_created for result in results) == 12
    assert sorted(Bill.objects.values_list("number", flat=True)) == list(range(1, 13))
    assert sorted(Bill.objects.values_list("account_id", flat=True)) == sorted(a.pk for a in accounts)
    assert Order.objects.count() == 12


def test_run_for_march_bills_nothing_twice_across_months(alice_project, swiss_account):
    vm_order(alice_project, starts_at=at(2024, 12, 1))
    run_billing(JAN, today=date(2025, 4, 1))
    run_billing(FEB, today=date(2025, 4, 1))
    run_billing(MAR, today=date(2025, 4, 1))
    assert list(Bill.objects.order_by("number").values_list("state", "subtotal")) == [
        (BillState.OPEN, D("17.00"))] * 3


def test_months_with_a_clock_change_are_prorated_by_real_time(alice_project, swiss_account, make_customer,
                                                               settings):
    settings.TIME_ZONE = "Europe/Zurich"
    # October 2024 has 745 hours in Zurich (the clocks went back on the 27th). An order from 01:00 on
    # the 1st ran 744 of them: a little less than the whole month, never more.
    vm_order(alice_project, starts_at=at(2024, 10, 1, 1))
    _, project, _ = make_customer("dora", country="CH")
    vm_order(project, starts_at=at(2024, 9, 20))
    run_billing(date(2024, 10, 1), today=date(2024, 11, 1))
    quantities = sorted(BillLine.objects.values_list("quantity", "amount"))
    assert quantities == [((D(744) / D(745)).quantize(D("0.000001")), D("16.98")), (D(1), D("17.00"))]


def test_march_with_its_shorter_day_is_prorated_by_real_time(alice_project, swiss_account, settings):
    settings.TIME_ZONE = "Europe/Zurich"
    # March 2025 has 743 hours (the clocks went forward on the 30th); from 01:00 on the 1st: 742.
    vm_order(alice_project, starts_at=at(2025, 3, 1, 1))
    run_billing(MAR, today=date(2025, 4, 1))
    line = BillLine.objects.get()
    assert (line.quantity, line.amount) == ((D(742) / D(743)).quantize(D("0.000001")), D("16.98"))


def _bill_customers(make_customer, names):
    for name in names:
        _, project, _ = make_customer(name, country="CH")
        vm_order(project, starts_at=at(2024, 12, 1))
        do_open_order(project, "ipv4", starts_at=at(2024, 12, 1))


def test_a_batch_costs_the_same_statements_whatever_its_size(make_customer, count_statements):
    _bill_customers(make_customer, ["dora", "emil"])
    statements = count_statements()
    assert run_billing(JAN, today=date(2025, 2, 1), batch_size=100).bills_created == 2
    small = list(statements)
    _bill_customers(make_customer, [f"user{index}" for index in range(12)])
    statements = count_statements()
    assert run_billing(FEB, today=date(2025, 3, 1), batch_size=100).bills_created == 14
    # Every statement counts here, COPY included.
    assert len(statements) == len(small)
    if connection.vendor == "postgresql":
        assert sum(statement.startswith("COPY") for statement in statements) == 4  # bills, lines, entries, postings


def test_the_portable_writer_makes_the_same_bills_as_copy(make_customer, monkeypatch):
    from billing import bulk

    _bill_customers(make_customer, ["dora", "emil", "fritz"])
    run_billing(JAN, today=date(2025, 2, 1))
    # SQLite (the embedded setup) takes bulk_create instead of COPY; the tests run on PostgreSQL
    # only, so this sends PostgreSQL down that path.
    monkeypatch.setattr(bulk, "use_copy", lambda connection: False)
    run_billing(FEB, today=date(2025, 3, 1))

    def shape(bill):
        lines = [(line.order_id, line.description, line.quantity, line.unit_amount, line.amount)
                 for line in bill.lines.order_by("order_id")]
        postings = sorted((p.ledger_account, p.account_id, p.amount, p.currency)
                          for entry in bill.journal.all() for p in entry.postings.all())
        return (bill.account_id, bill.state, bill.subtotal, bill.vat_amount, bill.total, bill.vat_note, bill.bill_to,
                bill.card_problem, bill.paid_at, lines, postings, [entry.memo.split()[0] for entry in bill.journal.all()])

    for account_id in Bill.objects.values_list("account_id", flat=True).distinct():
        copied = Bill.objects.get(account_id=account_id, period_start=JAN)
        portable = Bill.objects.get(account_id=account_id, period_start=FEB)
        assert shape(copied) == shape(portable)
        assert copied.created is not None and portable.created is not None
    assert Bill.objects.values("uuid").distinct().count() == 6
    assert sorted(Bill.objects.values_list("number", flat=True)) == [1, 2, 3, 4, 5, 6]
