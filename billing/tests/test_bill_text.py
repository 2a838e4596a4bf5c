"""Issue 14 points 10 and 18: what a bill prints (periods in the site's time zone, "1 core", a reverse-charge
note that does not run into the amount, the supplier's VAT number)."""

from datetime import date

import pytest
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen import canvas

from billing import pdf
from billing.actions import do_open_order, do_verify_vat_number
from billing.models import Bill
from billing.periods import format_period
from billing.run import run_billing
from billing.tests.conftest import at


def test_a_period_prints_in_the_sites_time_zone_with_its_last_day():
    # 1 October 00:00 to 21 October 00:00 in Zurich is 30 September 22:00 to 20 October 22:00 UTC.
    assert format_period(at(2026, 10, 1), at(2026, 10, 21)) == "2026-10-01 – 2026-10-20"
    assert format_period(at(2026, 10, 1), at(2026, 11, 1)) == "2026-10-01 – 2026-10-31"
    assert format_period(at(2026, 10, 5, 9), at(2026, 10, 5, 9)) == "2026-10-05"  # a one-time charge


@pytest.fixture
def drawn(monkeypatch):
    """Records every string the PDF draws (and still draws it): what a reader of the page sees where."""
    texts = []
    plain, right = canvas.Canvas.drawString, canvas.Canvas.drawRightString

    def draw(self, x, y, text, *args, **kwargs):
        texts.append(("left", x, y, text, self._fontname, self._fontsize))
        return plain(self, x, y, text, *args, **kwargs)

    def draw_right(self, x, y, text, *args, **kwargs):
        texts.append(("right", x, y, text, self._fontname, self._fontsize))
        return right(self, x, y, text, *args, **kwargs)

    monkeypatch.setattr(canvas.Canvas, "drawString", draw)
    monkeypatch.setattr(canvas.Canvas, "drawRightString", draw_right)
    return texts


def test_the_pdf_prints_local_periods_and_one_core(make_customer, drawn):
    from vms import actions as vm_actions

    user, project, account = make_customer("dora", country="CH")
    vm, _ = vm_actions.do_create_vm(user, project, name="tiny", cores=1, memory_mib=512, disk_mib=1024)
    do_open_order(project, "vm", cores=1, memory_mib=1024, disk_mib=10240, starts_at=at(2025, 1, 1),
                  description="VM web: 1 core")
    run_billing(date(2025, 1, 1), today=date(2025, 2, 1))
    pdf.render_pdf(Bill.objects.get(account=account))
    texts = [text for _, _, _, text, _, _ in drawn]
    assert "2025-01-01 – 2025-01-31" in texts  # not "2024-12-31 – 2025-02-01" (UTC, exclusive)
    assert any(text.startswith("Period 2025-01-01 – 2025-01-31") for text in texts)
    assert "1 core," in project.orders.get(resource_uuid=vm.uuid).description


def test_the_reverse_charge_note_wraps_left_of_the_amount(make_customer, drawn, staff):
    _, project, account = make_customer("dora", country="DE", vat_number="DE136695976")
    do_verify_vat_number(staff, account)
    do_open_order(project, "ipv4", quantity="10", starts_at=at(2025, 1, 1))
    run_billing(date(2025, 1, 1), today=date(2025, 2, 1))
    bill = Bill.objects.get(account=account)
    assert "Reverse charge" in bill.vat_note
    pdf.render_pdf(bill)
    amount_column = pdf.RIGHT - pdf.AMOUNT_WIDTH
    label_rows = [(x, text, font, size) for side, x, y, text, font, size in drawn
                  if side == "left" and x == pdf.LEFT + 60 * pdf.mm]
    assert any("Reverse" in text for _, text, _, _ in label_rows)
    for x, text, font, size in label_rows:
        assert x + stringWidth(text, font, size) <= amount_column, text
    assert "DE136695976)." in "".join(text for _, text, _, _ in label_rows)


def test_start_up_says_when_bills_with_vat_have_no_supplier_vat_number(settings):
    from billing.checks import billing_settings

    settings.UNCLOUD_BILLING_VAT_NUMBER = ""
    assert "billing.W002" in [problem.id for problem in billing_settings(None)]
    settings.UNCLOUD_BILLING_VAT_NUMBER = "CHE-116.281.710 MWST"
    assert "billing.W002" not in [problem.id for problem in billing_settings(None)]
