"""Issue 14, what customers expect: a spending overview (month to date per resource, forecast, credit,
open bills, history) in the portal and the API, for the account holder only."""

from datetime import date
from decimal import Decimal

from django.test import Client
from django.utils import timezone

from billing.actions import do_add_credit, do_open_order
from billing.run import run_billing
from billing.spending import spending
from billing.tests.conftest import at

D = Decimal


def test_month_to_date_and_forecast_per_resource(alice_project, swiss_account, staff):
    do_open_order(alice_project, "ipv4", quantity="1", starts_at=at(2024, 12, 1),
                  resource_uuid="5b1c3a52-0000-4000-8000-00000000a001", description="IPv4 192.0.2.1")
    run_billing(date(2024, 12, 1), today=date(2025, 1, 1))  # December: 2.16 with VAT, open
    do_open_order(alice_project, "vm-hourly", cores=1, memory_mib=1024, disk_mib=10240, starts_at=at(2025, 1, 10),
                  resource_uuid="5b1c3a52-0000-4000-8000-00000000a002", description="VM web")
    do_add_credit(staff, swiss_account, D("1.00"), "welcome")
    report = spending(swiss_account, now=at(2025, 1, 16))  # 15 of 31 days gone
    rows = {row.description: row for row in report.resources}
    assert rows["IPv4 192.0.2.1"].so_far == D("0.97") and rows["IPv4 192.0.2.1"].forecast == D("2.00")
    # 6 days * 24 h of an hourly VM at 0.007 + 0.0035 + 10 * 0.00014 = 0.0119 per hour.
    assert rows["VM web"].so_far == D("1.71") and rows["VM web"].forecast == D("6.28")
    assert (report.so_far, report.forecast) == (D("2.68"), D("8.28"))
    assert report.forecast_vat == D("0.67") and report.forecast_total == D("8.95")
    [open_bill] = report.open_bills
    assert (open_bill["total"], open_bill["open_amount"]) == (D("2.16"), D("1.16"))  # the credit counts
    assert report.credit == D("1.00") and [month["month"] for month in report.history] == [date(2024, 12, 1)]


def test_portal_and_api_show_only_your_own_spending(alice, alice_project, swiss_account, api):
    month = timezone.localdate().replace(day=1)
    do_open_order(alice_project, "ipv4", quantity="1", starts_at=at(month.year, month.month, 1),
                  description="IPv4 192.0.2.9")
    client = Client()
    client.force_login(alice)
    page = client.get("/billing/").content.decode()
    assert 'id="spending"' in page and "IPv4 192.0.2.9" in page and 'class="forecast">2.00 CHF' in page
    mine = api["alice"].get("/api/v1/billing/spending/").json()
    assert mine["forecast"] == "2.00" and mine["resources"][0]["description"] == "IPv4 192.0.2.9"
    for other in ("bob", "charlie"):  # a member of the project, a stranger: their own (empty) spending
        theirs = api[other].get("/api/v1/billing/spending/").json()
        assert theirs["resources"] == [] and theirs["forecast"] == "0.00"
