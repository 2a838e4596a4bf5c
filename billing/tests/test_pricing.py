"""VM prices before ordering: billing.pricing.monthly_vm_price and GET /api/v1/prices/vm/.

Catalogue of migration 0002: vm = 5.00 per core + 2.50 per GiB memory + 0.10 per GiB disk a month,
ipv4 = 2.00 a month; Swiss VAT 8.1 %, German 19 %.
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from billing.actions import do_update_billing_address
from billing.models import BillingAccount, Price, Product
from billing.pricing import format_rate, monthly_vm_price

D = Decimal
SIZE = {"cores": 2, "memory_mib": 2048, "disk_mib": 20480}


def test_a_new_customer_sees_the_swiss_price_and_gets_no_account_from_looking(alice_project):
    quote = monthly_vm_price(alice_project, **SIZE)
    assert (quote.currency, quote.monthly.excl_vat, quote.monthly.vat_amount, quote.monthly.total) == (
        "CHF", D("17.00"), D("1.38"), D("18.38"))
    assert quote.vat_rate_percent == D("8.10") and quote.vat_text == "incl. 8.1% VAT"
    assert (quote.per_core, quote.per_memory_gib, quote.per_disk_gib) == (D("5"), D("2.5"), D("0.1"))
    assert (quote.ipv4.excl_vat, quote.ipv4.total) == (D("2.00"), D("2.16"))
    assert str(quote) == "CHF 18.38 per month (incl. 8.1% VAT)"
    assert quote.unit_prices_text() == "CHF 5.00 per core, 2.50 per GiB memory, 0.10 per GiB disk per month, excl. VAT"
    assert not BillingAccount.objects.exists()


@pytest.mark.parametrize("country, vat_number, total, vat_text", [
    ("DE", "", D("20.23"), "incl. 19% VAT"),
    ("DE", "DE136695976", D("17.00"), "no VAT"),
    ("US", "", D("17.00"), "no VAT"),
    ("LI", "", D("18.38"), "incl. 8.1% VAT"),
])
def test_the_vat_of_the_project_owners_address_applies(alice, alice_project, bob, country, vat_number, total,
                                                       vat_text):
    from billing.actions import account_of_user, do_verify_vat_number

    account = do_update_billing_address(alice, account_of_user(alice), name="Alice", postal_code="1", city="Town",
                                        country=country, vat_number=vat_number)
    if vat_number:
        do_verify_vat_number(None, account)
    # bob's own address does not matter in alice's project: she pays for it.
    do_update_billing_address(bob, account_of_user(bob), country="CH")
    quote = monthly_vm_price(alice_project, **SIZE)
    assert (quote.monthly.total, quote.vat_text) == (total, vat_text)


def test_the_price_version_valid_now_counts_not_a_future_one(alice_project):
    vm = Product.objects.get(code="vm")
    now = timezone.now()
    Price.objects.create(product=vm, valid_from=now - timedelta(minutes=1), per_core=D("6"), per_memory_gib=D("3"),
                         per_disk_gib=D("0.05"), amount=D("1.5"))
    Price.objects.create(product=vm, valid_from=now + timedelta(days=30), per_core=D("100"))
    quote = monthly_vm_price(alice_project, cores=1, memory_mib=1024, disk_mib=10240)
    assert quote.monthly.excl_vat == D("11.00")  # 1.50 + 6 + 3 + 0.50
    assert quote.unit_prices_text().startswith("CHF 1.50 per VM, CHF 6.00 per core")


def test_odd_sizes_and_rates_are_rounded_to_cents_once(alice_project):
    quote = monthly_vm_price(alice_project, cores=3, memory_mib=1536, disk_mib=10300)
    # 15 + 3.75 + 1.005859375 = 19.755859375 -> 19.76; VAT 1.60056 -> 1.60
    assert (quote.monthly.excl_vat, quote.monthly.vat_amount, quote.monthly.total) == (D("19.76"), D("1.60"),
                                                                                       D("21.36"))


def test_no_price_in_the_accounts_currency_means_no_quote(alice, alice_project):
    from billing.actions import account_of_user

    account = account_of_user(alice)
    BillingAccount.objects.filter(pk=account.pk).update(currency="EUR")
    assert monthly_vm_price(alice_project, **SIZE) is None


def test_rates_are_written_as_people_read_them():
    assert [format_rate(D(value)) for value in ("5.000000", "0.100000", "0.023800", "0")] == [
        "5.00", "0.10", "0.0238", "0.00"]


def test_it_is_the_default_price_function_of_the_vm_form(settings):
    assert settings.UNCLOUD_VM_PRICE_FUNCTION == "billing.pricing.monthly_vm_price"


# The endpoint ---------------------------------------------------------------------------------------

URL = "/api/v1/prices/vm/"


def test_owner_and_member_get_the_price_of_the_project_stranger_gets_404(api, alice_project):
    query = {"project": str(alice_project.uuid), "cores": 2, "memory_mib": "2GiB", "disk_mib": 20480}
    for name in ("alice", "bob"):
        answer = api[name].get(URL, query)
        assert answer.status_code == 200, (name, answer.content)
        body = answer.json()
        assert (body["project"], body["currency"], body["monthly"]) == (
            str(alice_project.uuid), "CHF", {"excl_vat": "17.00", "vat": "1.38", "total": "18.38"})
        assert (body["memory_mib"], body["disk_mib"], body["vat_text"]) == (2048, 20480, "incl. 8.1% VAT")
        assert body["unit_prices"]["per_core"] == "5.00" and body["ipv4"]["total"] == "2.16"
    assert api["charlie"].get(URL, query).status_code == 404


def test_without_a_project_the_callers_own_counts(api, charlie):
    from billing.actions import account_of_user

    do_update_billing_address(charlie, account_of_user(charlie), country="US")
    answer = api["charlie"].get(URL, {"cores": 1, "memory_mib": 1024, "disk_mib": 10240, "project": ""})
    assert answer.status_code == 200
    assert answer.json()["monthly"]["total"] == "8.50" and answer.json()["vat_text"] == "no VAT"


@pytest.mark.parametrize("query, field", [
    ({"cores": 0, "memory_mib": 1024, "disk_mib": 10240}, "cores"),
    ({"cores": "two", "memory_mib": 1024, "disk_mib": 10240}, "cores"),
    ({"cores": 999, "memory_mib": 1024, "disk_mib": 10240}, "cores"),
    ({"memory_mib": 1024, "disk_mib": 10240}, "cores"),
    ({"cores": 1, "memory_mib": "lots", "disk_mib": 10240}, "memory_mib"),
    ({"cores": 1, "memory_mib": 64, "disk_mib": 10240}, "memory_mib"),
    ({"cores": 1, "memory_mib": 1024, "disk_mib": "-5"}, "disk_mib"),
    ({"cores": 1, "memory_mib": 1024, "disk_mib": "1.5"}, "disk_mib"),
    ({"cores": 1, "memory_mib": 1024, "disk_mib": 10240, "project": "not-a-uuid"}, "project"),
])
def test_bad_numbers_are_400_with_the_field(api, query, field):
    answer = api["alice"].get(URL, query)
    assert answer.status_code == 400
    assert field in answer.json()


def test_the_portal_session_may_ask_and_strangers_to_the_site_may_not(alice, alice_project):
    client = Client()
    query = {"project": str(alice_project.uuid), "cores": 1, "memory_mib": 1024, "disk_mib": 10240}
    assert client.get(URL, query).status_code in (401, 403)
    client.force_login(alice)
    assert client.get(URL, query).json()["monthly"]["total"] == "9.19"


def test_no_vm_price_is_409(api, alice_project):
    Product.objects.filter(code="vm").update(active=False)
    answer = api["alice"].get(URL, {"cores": 1, "memory_mib": 1024, "disk_mib": 10240})
    assert answer.status_code == 409


def test_a_vm_of_odd_mib_sizes_is_ordered_at_its_rate_to_six_decimals(api, alice_project):
    # 130 MiB and 1030 MiB: 5.00 + 2.50 x 130/1024 + 0.10 x 1030/1024 = 5.41796875 a month, one decimal
    # more than an order's amount holds. It was a 500 (the field refused it); now the rate is rounded
    # half up to 6 decimals, and the quote says what the order charges.
    from billing.models import Order

    response = api["alice"].post("/api/v1/vms/", {"name": "odd", "cores": 1, "memory": "130M", "disk": "1030M",
                                                  "image": None}, format="json")
    assert response.status_code == 201, response.content
    order = Order.objects.get(resource_uuid=response.json()["uuid"])
    assert order.amount == D("5.417969")
    quote = monthly_vm_price(alice_project, cores=1, memory_mib=130, disk_mib=1030)
    assert quote.monthly.excl_vat == D("5.42")


def test_a_creates_one_read_of_the_accounts_standing_says_what_the_orm_reads_say(alice, alice_project):
    # billing.actions.account_in_good_standing(), one hand-written statement, against the reads it
    # stands for (account_of_project, ledger.bill_in_arrears, last_billed_end), on both databases.
    from datetime import date

    from billing import ledger
    from billing.actions import account_in_good_standing, account_of_project, last_billed_end
    from billing.models import Bill

    assert account_in_good_standing(alice_project) is None  # no account yet: made by the slow path
    account = account_of_project(alice_project)
    assert account_in_good_standing(alice_project) == (account, None)

    def bill(number, start, end, due, state):
        return Bill.objects.create(account=account, number=number, reference=f"R{number}", period_start=start,
                                   period_end=end, issued_on=start, due_on=due, state=state, subtotal=D("1.00"),
                                   vat_treatment="none", total=D("1.00"))

    bill(1, date(2026, 9, 1), date(2026, 10, 1), timezone.localdate() + timedelta(days=10), "paid")
    bill(2, date(2026, 10, 1), date(2026, 11, 1), timezone.localdate() + timedelta(days=10), "open")
    bill(3, date(2026, 11, 1), date(2026, 12, 1), timezone.localdate() + timedelta(days=10), "cancelled")
    assert last_billed_end(account).date() == date(2026, 11, 1)  # the cancelled bill's month is not billed
    assert account_in_good_standing(alice_project) == (account, last_billed_end(account))
    assert ledger.bill_in_arrears(account) is None

    overdue = bill(4, date(2026, 8, 1), date(2026, 9, 1), timezone.localdate() - timedelta(days=60), "overdue")
    assert ledger.bill_in_arrears(account) == overdue
    assert account_in_good_standing(alice_project) is None  # the slow path refuses, naming the bill
    Bill.objects.filter(pk=overdue.pk).update(state="paid")
    assert account_in_good_standing(alice_project) is not None
    BillingAccount.objects.filter(pk=account.pk).update(suspended_at=timezone.now())
    assert account_in_good_standing(alice_project) is None
