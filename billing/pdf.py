"""A bill as PDF (reportlab) with the Swiss QR-bill (qrbill, drawn from its SVG by svglib)."""

import io
from datetime import timedelta

from django.conf import settings
from qrbill import QRBill
from reportlab.graphics import renderPDF
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.lib.utils import simpleSplit
from reportlab.pdfgen import canvas
from svglib.svglib import svg2rlg

from billing import ledger
from billing.countries import ISO_3166_CODES
from billing.models import Bill
from billing.periods import format_period
from billing.references import compact_iban, format_reference
from billing.swiss_text import swiss_payment_text

# Codes people used before addresses were checked, and the country they meant.
OLD_COUNTRY_CODES = {"UK": "GB", "EL": "GR"}

QR_BILL_HEIGHT = 105 * mm
AMOUNT_WIDTH = 30 * mm
LEFT = 20 * mm
RIGHT = A4[0] - 20 * mm


def creditor() -> dict:
    return {
        "name": settings.UNCLOUD_BILLING_CREDITOR_NAME, "street": settings.UNCLOUD_BILLING_CREDITOR_STREET,
        "house_num": settings.UNCLOUD_BILLING_CREDITOR_HOUSE_NUMBER,
        "pcode": settings.UNCLOUD_BILLING_CREDITOR_POSTAL_CODE, "city": settings.UNCLOUD_BILLING_CREDITOR_CITY,
        "country": settings.UNCLOUD_BILLING_CREDITOR_COUNTRY,
    }


def qr_bill(bill: Bill) -> QRBill | None:
    """The QR-bill of a bill, or None when the creditor's IBAN cannot carry one (not CH/LI, not CHF/EUR)."""
    iban = compact_iban(settings.UNCLOUD_BILLING_IBAN)
    if iban[:2] not in ("CH", "LI") or bill.currency not in ("CHF", "EUR"):
        return None
    address = bill.bill_to or {}
    debtor = None
    country = OLD_COUNTRY_CODES.get(address.get("country", ""), address.get("country", ""))
    if address.get("postal_code") and address.get("city") and country in ISO_3166_CODES:
        # An address saved before countries were checked may be unusable: the QR-bill then leaves the
        # payer's box empty (the payer writes it) instead of failing.
        debtor = {"name": swiss_payment_text(address.get("name") or "", 70),
                  "street": swiss_payment_text(address.get("street", ""), 70),
                  "house_num": swiss_payment_text(address.get("house_number", ""), 16),
                  "pcode": swiss_payment_text(address["postal_code"], 16),
                  "city": swiss_payment_text(address["city"], 35), "country": country}
    amount = ledger.open_amount(bill) if bill.is_unpaid else bill.total
    return QRBill(
        account=iban, creditor={key: swiss_payment_text(value, 70) for key, value in creditor().items()},
        debtor=debtor, amount=f"{amount:.2f}", currency=bill.currency,
        reference_number=bill.reference, additional_information=f"Bill {bill.number}", language="en",
    )


def qr_bill_svg(bill: Bill) -> str | None:
    qr = qr_bill(bill)
    if qr is None:
        return None
    out = io.StringIO()
    qr.as_svg(out)
    return out.getvalue()


def render_pdf(bill: Bill) -> bytes:
    buffer = io.BytesIO()
    page = canvas.Canvas(buffer, pagesize=A4, invariant=1)
    page.setTitle(f"Bill {bill.number}")
    page.setAuthor(settings.UNCLOUD_BILLING_CREDITOR_NAME)
    y = _header(page, bill)
    lines = list(bill.lines.order_by("id"))
    page.setFont("Helvetica-Bold", 9)
    page.drawString(LEFT, y, "Description")
    page.drawString(LEFT + 110 * mm, y, "Period")
    page.drawRightString(RIGHT, y, f"Amount {bill.currency}")
    y -= 6 * mm
    page.setFont("Helvetica", 9)
    for line in lines:
        if y < 30 * mm:
            page.showPage()
            page.setFont("Helvetica", 9)
            y = A4[1] - 25 * mm
        page.drawString(LEFT, y, swiss_payment_text(line.description, 70))
        page.drawString(LEFT + 110 * mm, y, format_period(line.period_start, line.period_end))
        page.drawRightString(RIGHT, y, f"{line.amount:.2f}")
        y -= 5 * mm
    y -= 3 * mm
    totals = [("Subtotal", bill.subtotal), (bill.vat_note or "VAT", bill.vat_amount), ("Total", bill.total)]
    if y < 30 * mm + 6 * mm * len(totals):
        page.showPage()
        y = A4[1] - 25 * mm
    label_width = RIGHT - AMOUNT_WIDTH - (LEFT + 60 * mm)
    for label, amount in totals:
        font = "Helvetica-Bold" if label == "Total" else "Helvetica"
        page.setFont(font, 9)
        # A long note (reverse charge) wraps left of the amount column instead of running into it.
        rows = simpleSplit(swiss_payment_text(label, 200), font, 9, label_width) or [""]
        page.drawRightString(RIGHT, y, f"{amount:.2f}")
        for row in rows:
            page.drawString(LEFT + 60 * mm, y, row)
            y -= 4 * mm
        y -= 2 * mm
    page.setFont("Helvetica", 9)
    page.drawString(LEFT, y - 4 * mm, f"Please pay by {bill.due_on:%Y-%m-%d} with reference "
                                      f"{format_reference(bill.reference)}.")
    y -= 10 * mm
    svg = qr_bill_svg(bill)
    if svg is not None:
        if y < QR_BILL_HEIGHT + 5 * mm:
            page.showPage()
        drawing = svg2rlg(io.BytesIO(svg.encode()))
        renderPDF.draw(drawing, page, 0, 0)
    page.showPage()
    page.save()
    return buffer.getvalue()


def _header(page, bill: Bill) -> float:
    top = A4[1] - 20 * mm
    page.setFont("Helvetica-Bold", 11)
    page.drawString(LEFT, top, settings.UNCLOUD_BILLING_CREDITOR_NAME)
    page.setFont("Helvetica", 9)
    c = creditor()
    page.drawString(LEFT, top - 5 * mm, f"{c['street']} {c['house_num']}".strip())
    page.drawString(LEFT, top - 10 * mm, f"{c['country']}-{c['pcode']} {c['city']}")
    if settings.UNCLOUD_BILLING_VAT_NUMBER:
        page.drawString(LEFT, top - 15 * mm, f"VAT {settings.UNCLOUD_BILLING_VAT_NUMBER}")
    address = bill.bill_to or {}
    x = 120 * mm
    rows = [address.get("name", ""), f"{address.get('street', '')} {address.get('house_number', '')}".strip(),
            f"{address.get('postal_code', '')} {address.get('city', '')}".strip(), address.get("country", "")]
    if address.get("vat_number"):
        rows.append(f"VAT {address['vat_number']}")
    for index, row in enumerate(row for row in rows if row):
        page.drawString(x, top - 25 * mm - index * 5 * mm, swiss_payment_text(row, 60))
    y = top - 60 * mm
    page.setFont("Helvetica-Bold", 14)
    page.drawString(LEFT, y, f"Bill {bill.number}")
    page.setFont("Helvetica", 9)
    last_day = bill.period_end - timedelta(days=1)
    page.drawString(LEFT, y - 7 * mm, f"Period {bill.period_start:%Y-%m-%d} – {last_day:%Y-%m-%d}"
                                      f" · issued {bill.issued_on:%Y-%m-%d} · due {bill.due_on:%Y-%m-%d}")
    return y - 17 * mm
