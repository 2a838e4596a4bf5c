"""Bank files at the edges a hoster meets every month (issue 14, points 1, 2, 3, 14, 15), and a
hand-written camt.054 + camt.053 pair whose result is compared with what a bookkeeper writes by hand."""

from datetime import date
from decimal import Decimal

import pytest
from django.core import mail

from billing import ledger
from billing.actions import do_open_order
from billing.bank_import import import_statement
from billing.camt import CamtError, parse
from billing.choices import BankEntryState, BillState, LedgerAccount
from billing.models import BankEntry, Bill, Payment, Posting
from billing.references import scor_reference
from billing.run import run_billing
from billing.tests.conftest import JAN, at
from billing.tests.test_views import staff_portal

D = Decimal


def _customer_with_bill(make_customer, name, addresses):
    """A customer abroad (no VAT) with a January bill of `addresses` * 2.00."""
    _, project, account = make_customer(name, country="US")
    do_open_order(project, "ipv4", quantity=addresses, starts_at=at(2025, 1, 1))
    return account


@pytest.fixture
def customers(make_customer, settings):
    settings.UNCLOUD_BILLING_STAFF_EMAILS = ["books@example.com"]
    accounts = {
        "anna": _customer_with_bill(make_customer, "anna", "10"),  # 20.00, pays exactly
        "ben": _customer_with_bill(make_customer, "ben", "7.15"),  # 14.30, his payment is reported twice
        "carla": _customer_with_bill(make_customer, "carla", "15"),  # 30.00, pays 10.00
        "dave": _customer_with_bill(make_customer, "dave", "4"),  # 8.00, pays 12.00
        "eva": _customer_with_bill(make_customer, "eva", "3"),  # 6.00, pays, then her bank takes it back
    }
    run_billing(JAN, today=date(2025, 2, 1))
    return {name: (account, Bill.objects.get(account=account)) for name, account in accounts.items()}


def tx(amount, reference, end_to_end, debtor, iban, *, indicator="CRDT", reversal=False, bank_ref=""):
    refs = f"<AcctSvcrRef>{bank_ref}</AcctSvcrRef>" if bank_ref else ""
    return f"""
          <TxDtls>
            <Refs>{refs}<EndToEndId>{end_to_end}</EndToEndId></Refs>
            <Amt Ccy="CHF">{amount}</Amt>
            <CdtDbtInd>{indicator}</CdtDbtInd>{"<RvslInd>true</RvslInd>" if reversal else ""}
            <RltdPties><Dbtr><Pty><Nm>{debtor}</Nm></Pty></Dbtr>
              <DbtrAcct><Id><IBAN>{iban}</IBAN></Id></DbtrAcct></RltdPties>
            <RmtInf><Strd><CdtrRefInf><Ref>{reference}</Ref></CdtrRefInf></Strd></RmtInf>
          </TxDtls>"""


def document(kind, message_id, entries):
    body, report = ("BkToCstmrDbtCdtNtfctn", "Ntfctn") if kind == "054" else ("BkToCstmrStmt", "Stmt")
    version = "08" if kind == "054" else "04"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.{kind}.001.{version}">
  <{body}>
    <GrpHdr><MsgId>{message_id}</MsgId><CreDtTm>2025-02-10T18:00:00</CreDtTm></GrpHdr>
    <{report}>
      <Id>{message_id}-1</Id>
      <Acct><Id><IBAN>CH5604835012345678009</IBAN></Id></Acct>
      {"".join(entries)}
    </{report}>
  </{body}>
</Document>""".encode()


def ntry(amount, *, indicator="CRDT", bank_ref="", details="", reversal=False, batch=None, booked="2025-02-10"):
    refs = f"<AcctSvcrRef>{bank_ref}</AcctSvcrRef>" if bank_ref else ""
    batch_xml = f"<Btch><NbOfTxs>{batch}</NbOfTxs></Btch>" if batch else ""
    return f"""
      <Ntry>
        <Amt Ccy="CHF">{amount}</Amt>
        <CdtDbtInd>{indicator}</CdtDbtInd>{"<RvslInd>true</RvslInd>" if reversal else ""}
        <Sts><Cd>BOOK</Cd></Sts>
        <BookgDt><Dt>{booked}</Dt></BookgDt>
        <ValDt><Dt>{booked}</Dt></ValDt>
        {refs}
        <NtryDtls>{batch_xml}{details}</NtryDtls>
      </Ntry>"""


def test_a_hand_written_camt054_and_camt053_pair_leaves_every_balance_as_a_bookkeeper_writes_it(
        customers, staff, django_capture_on_commit_callbacks):
    (anna, anna_bill), (ben, ben_bill), (carla, carla_bill), (dave, dave_bill), (eva, eva_bill) = customers.values()
    assert [bill.total for _, bill in customers.values()] == [D("20.00"), D("14.30"), D("30.00"), D("8.00"),
                                                              D("6.00")]
    # The notification of 10 February: a collective booking of four QR-bill payments (details given,
    # no bank reference per transaction), an unknown sender, and Eva's payment.
    four = (tx("20.00", anna_bill.reference, "E2E-ANNA", "Anna", "CH9300762011623852957")
            + tx("14.30", ben_bill.reference, "NOTPROVIDED", "Ben", "CH1509000000123456789")
            + tx("10.00", carla_bill.reference, "E2E-CARLA", "Carla", "CH3908704016075473007")
            + tx("12.00", dave_bill.reference, "E2E-DAVE", "Dave", "CH4431999123000889012"))
    notification = document("054", "NOTIF-0210", [
        ntry("56.30", bank_ref="COLL-0210", details=four, batch=4),
        ntry("99.00", bank_ref="SINGLE-77", details=tx("99.00", "", "E2E-X", "Nobody we know",
                                                         "DE89370400440532013000")),
        ntry("6.00", bank_ref="SINGLE-78", details=tx("6.00", eva_bill.reference, "E2E-EVA", "Eva",
                                                       "CH5800791123000889012")),
    ])
    # The bank re-sends Ben's payment in a new notification (new MsgId, no bank references at all).
    resent = document("054", "NOTIF-0210-RESENT", [
        ntry("14.30", details=tx("14.30", ben_bill.reference, "NOTPROVIDED", "Ben", "CH1509000000123456789")),
    ])
    # The day's statement: the batch as one line without transactions, the two single credits again,
    # and Eva's bank taking her 6.00 back (a reversal, DBIT with RvslInd).
    statement = document("053", "STMT-0210", [
        ntry("56.30", bank_ref="COLL-0210", batch=4),
        ntry("99.00", bank_ref="SINGLE-77", details=tx("99.00", "", "E2E-X", "Nobody we know",
                                                         "DE89370400440532013000")),
        ntry("6.00", bank_ref="SINGLE-78", details=tx("6.00", eva_bill.reference, "E2E-EVA", "Eva",
                                                       "CH5800791123000889012")),
        ntry("6.00", indicator="DBIT", reversal=True, bank_ref="RVSL-78",
             details=tx("6.00", eva_bill.reference, "E2E-EVA", "Eva", "CH5800791123000889012", indicator="DBIT",
                        reversal=True)),
    ])
    for name, data in (("notification.xml", notification), ("resent.xml", resent), ("statement.xml", statement)):
        with django_capture_on_commit_callbacks(execute=True):
            import_statement(staff, name, data)

    # By hand: Anna and Ben paid exactly, Carla owes 20.00 of 30.00, Dave has 4.00 in his favour, Eva's
    # payment was taken back so she owes her 6.00 again, 99.00 waits for staff. Nothing counted twice.
    balances = {name: ledger.balance(account) for name, (account, _) in customers.items()}
    assert balances == {"anna": D("0.00"), "ben": D("0.00"), "carla": D("-20.00"), "dave": D("4.00"),
                        "eva": D("-6.00")}
    states = {name: Bill.objects.get(pk=bill.pk).state for name, (_, bill) in customers.items()}
    assert states == {"anna": BillState.PAID, "ben": BillState.PAID, "carla": BillState.OPEN,
                      "dave": BillState.PAID, "eva": BillState.OVERDUE}  # due in March 2025: overdue again
    assert ledger.open_amount(Bill.objects.get(pk=carla_bill.pk)) == D("20.00")
    assert _ledger_total(LedgerAccount.BANK) == D("56.30") + D("99.00") + D("6.00") - D("6.00")
    assert _ledger_total(LedgerAccount.SUSPENSE) == D("-99.00")
    assert Payment.objects.filter(account=ben).count() == 1

    collective = BankEntry.objects.get(entry_key="COLL-0210")
    assert collective.state == BankEntryState.COLLECTIVE and collective.details.count() == 4
    reversal = BankEntry.objects.get(entry_reference="RVSL-78")
    assert reversal.state == BankEntryState.REVERSAL and reversal.reverses.state == BankEntryState.REVERSED
    assert reversal.reverses.payment.reversed_at is not None
    assert reversal.journal.get().postings.get(ledger_account=LedgerAccount.RECEIVABLE).account == eva
    told = "\n".join(message.body for message in mail.outbox if "books@example.com" in message.to)
    assert "Reversal: 6.00 CHF" in told and "Unmatched: 99.00 CHF" in told


def _ledger_total(ledger_account) -> Decimal:
    return sum((p.amount for p in Posting.objects.filter(ledger_account=ledger_account)), D("0.00"))


def test_statement_first_then_notification_counts_the_batch_once(customers, staff):
    """Some banks deliver the statement before the details: the batch waits, unbooked, for them."""
    (anna, anna_bill), (ben, ben_bill) = list(customers.values())[:2]
    import_statement(staff, "statement.xml", document("053", "S1", [ntry("34.30", bank_ref="B-9", batch=2)]))
    waiting = BankEntry.objects.get(entry_key="B-9")
    assert waiting.state == BankEntryState.AWAITING_DETAILS and not waiting.journal.exists()
    page = staff_portal(staff).get("/billing/staff/bank/").content.decode()
    assert "Collective bookings waiting for their transactions (1)" in page and "B-9" in page
    import_statement(staff, "notification.xml", document("054", "N1", [ntry("34.30", bank_ref="B-9", details=(
        tx("20.00", anna_bill.reference, "E1", "Anna", "CH9300762011623852957")
        + tx("14.30", ben_bill.reference, "E2", "Ben", "CH1509000000123456789")))]))
    assert BankEntry.objects.get(entry_key="B-9").state == BankEntryState.COLLECTIVE
    assert _ledger_total(LedgerAccount.BANK) == D("34.30")
    assert ledger.balance(anna) == ledger.balance(ben) == D("0.00")


def test_a_batch_without_shared_reference_is_found_by_date_number_and_sum(customers, staff):
    (anna, anna_bill), (ben, ben_bill), (carla, carla_bill) = list(customers.values())[:3]
    import_statement(staff, "n.xml", document("054", "N2", [
        ntry("20.00", bank_ref="A-1", details=tx("20.00", anna_bill.reference, "E1", "Anna", "CH93")),
        ntry("14.30", bank_ref="A-2", details=tx("14.30", ben_bill.reference, "E2", "Ben", "CH15")),
        ntry("30.00", bank_ref="A-3", details=tx("30.00", carla_bill.reference, "E3", "Carla", "CH39")),
    ]))
    import_statement(staff, "s.xml", document("053", "S2", [ntry("34.30", bank_ref="OTHER-REF", batch=2)]))
    collective = BankEntry.objects.get(entry_key="OTHER-REF")
    assert collective.state == BankEntryState.COLLECTIVE
    assert sorted(e.amount for e in collective.details.all()) == [D("14.30"), D("20.00")]
    assert _ledger_total(LedgerAccount.BANK) == D("64.30")


def test_a_transaction_level_debit_for_a_bills_reference_reverses_the_payment(customers, staff):
    """No RvslInd at all: a DBIT transaction with the reference and amount of a payment we booked."""
    eva, eva_bill = customers["eva"]
    import_statement(staff, "n.xml", document("054", "N3", [
        ntry("6.00", bank_ref="P-1", details=tx("6.00", eva_bill.reference, "E-EVA", "Eva", "CH58"))]))
    assert Bill.objects.get(pk=eva_bill.pk).state == BillState.PAID
    import_statement(staff, "r.xml", document("054", "N4", [
        ntry("6.00", indicator="DBIT", bank_ref="P-2",
             details=tx("6.00", eva_bill.reference, "E-EVA", "Eva", "CH58", indicator="DBIT"))]))
    assert BankEntry.objects.get(entry_reference="P-1").state == BankEntryState.REVERSED
    assert Bill.objects.get(pk=eva_bill.pk).state == BillState.OVERDUE  # due in March 2025
    assert ledger.balance(eva) == D("-6.00")


def test_the_same_transaction_resent_without_bank_reference_is_credited_once(customers, staff):
    ben, ben_bill = customers["ben"]
    for message_id in ("FIRST", "SECOND"):
        import_statement(staff, f"{message_id}.xml", document("054", message_id, [
            ntry("7.15", details=tx("7.15", ben_bill.reference, "NOTPROVIDED", "Ben", "CH15"))]))
    assert Payment.objects.filter(account=ben).count() == 1
    assert ledger.balance(ben) == D("-7.15")


def test_two_equal_payments_in_one_file_are_two_payments(customers, staff):
    ben, ben_bill = customers["ben"]
    same = ntry("7.15", details=tx("7.15", ben_bill.reference, "NOTPROVIDED", "Ben", "CH15"))
    import_statement(staff, "twice.xml", document("054", "T", [same, same]))
    assert Bill.objects.get(pk=ben_bill.pk).state == BillState.PAID
    # The same two reported again in another message are the same two.
    import_statement(staff, "twice-again.xml", document("054", "T2", [same, same]))
    assert Payment.objects.filter(account=ben).count() == 2


@pytest.mark.parametrize("text, expected", [
    ("Rechnung rf74 1 danke", "RF741"),
    ("RF18 5390 0754 7034 thanks", "RF18539007547034"),
    ("payment RF18539007547034", "RF18539007547034"),
    ("RF99 1 (wrong check digits)", ""),
])
def test_creditor_references_in_free_text_are_read_by_their_own_syntax(text, expected):
    from billing.camt import _reference_in

    assert scor_reference(1) == "RF741"
    assert _reference_in(text) == expected


def test_a_scor_reference_in_free_text_pays_the_bill(make_customer, staff, settings):
    settings.UNCLOUD_BILLING_IBAN = "CH93 0076 2011 6238 5295 7"  # an ordinary IBAN: SCOR references
    _, project, account = make_customer("rita", country="US")
    do_open_order(project, "ipv4", quantity="3", starts_at=at(2025, 1, 1))
    run_billing(JAN, today=date(2025, 2, 1))
    bill = Bill.objects.get(account=account)
    assert bill.reference.startswith("RF")
    spaced = " ".join(bill.reference[i:i + 4] for i in range(0, len(bill.reference), 4)).lower()
    import_statement(staff, "s.xml", document("054", "SC", [ntry("6.00", details=f"""
          <TxDtls><Amt Ccy="CHF">6.00</Amt><RmtInf><Ustrd>Rechnung {spaced} danke</Ustrd></RmtInf></TxDtls>""")]))
    assert Bill.objects.get(pk=bill.pk).state == BillState.PAID


DOCTYPE_UTF16 = ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE d [<!ENTITY x "boom">]>'
                 '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.08">&x;</Document>').encode("utf-16")
LATE_DOCTYPE = (b'<?xml version="1.0"?><!--' + b"x" * 5000 + b'--><!DOCTYPE d [<!ENTITY x "boom">]>'
                b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.08">&x;</Document>')
LATE_DOCTYPE_NO_ENTITY = (b'<?xml version="1.0"?><!--' + b"x" * 5000 + b'--><!DOCTYPE Document>'
                          b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.08"/>')


@pytest.mark.parametrize("data", [DOCTYPE_UTF16, LATE_DOCTYPE, LATE_DOCTYPE_NO_ENTITY],
                         ids=["utf16", "after-4096-bytes", "doctype-only"])
def test_dtds_are_refused_whatever_the_encoding_or_position(data, staff):
    with pytest.raises(CamtError, match="DTD"):
        parse(data)
    with pytest.raises(CamtError, match="DTD"):
        import_statement(staff, "evil.xml", data)
    assert not BankEntry.objects.exists()


def test_a_utf16_file_without_dtd_is_read():
    data = document("054", "U16", [ntry("1.00", details=tx("1.00", "", "E", "Zoë", "CH93"))])
    utf16 = data.decode().replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    assert parse(utf16).entries[0].debtor_name == "Zoë"


def test_a_large_file_is_imported_in_the_background_with_progress(customers, staff, settings, monkeypatch):
    """Issue 14 point 17. The task body runs here as the worker runs it (the worker itself is exercised by
    the worker-marked tests); chunks of 2 entries stand for chunks of 500."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from billing import bank_import
    from billing.models import BankImport, BankStatement
    from billing.tasks import import_bank_file

    settings.UNCLOUD_BILLING_INLINE_IMPORT_BYTES = 100
    monkeypatch.setattr(bank_import, "CHUNK", 2)
    bills = [bill for _, bill in customers.values()]
    data = document("054", "BIG", [ntry(f"{bill.total}", bank_ref=f"BIG-{index}", details=tx(
        f"{bill.total}", bill.reference, f"E-{index}", "Payer", "CH93")) for index, bill in enumerate(bills)])
    client = staff_portal(staff)
    response = client.post("/billing/staff/bank/", {"file": SimpleUploadedFile("big.xml", data)})
    assert response.status_code == 302
    job = BankImport.objects.get()
    assert job.state == BankImport.State.QUEUED and not BankEntry.objects.exists()
    assert "Queued" in client.get("/billing/staff/bank/").content.decode()
    assert import_bank_file.run(job.pk) == BankImport.State.DONE
    job.refresh_from_db()
    assert (job.done, job.total, job.percent) == (5, 5, 100)
    statement = BankStatement.objects.get()
    assert (statement.entries_total, statement.entries_matched) == (5, 5)
    assert all(Bill.objects.get(pk=bill.pk).state == BillState.PAID for bill in bills)
    assert "5 of 5 entries" in client.get("/billing/staff/bank/").content.decode()
    # The same job again (a redelivered task) changes nothing.
    import_bank_file.run(job.pk)
    assert Payment.objects.count() == 5


def test_a_background_import_of_a_bad_file_fails_visibly(staff, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from billing.models import BankImport
    from billing.tasks import import_bank_file

    settings.UNCLOUD_BILLING_INLINE_IMPORT_BYTES = 10
    client = staff_portal(staff)
    response = client.post("/billing/staff/bank/", {"file": SimpleUploadedFile("bad.xml", b"<Document>not closed")})
    assert response.status_code == 302
    job = BankImport.objects.get()
    assert import_bank_file.run(job.pk) == BankImport.State.FAILED
    assert "well-formed" in client.get("/billing/staff/bank/").content.decode()
