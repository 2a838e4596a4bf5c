"""Importing a camt file: book each new entry once, match it to a bill by reference, or queue it for staff.

Money is counted once, however often it is reported:
- An entry already imported (by the bank's reference or by its fingerprint, billing/camt.py) is a
  duplicate, whatever message reports it again.
- A collective booking (an Ntry without transactions, e.g. the camt.053 line for a batch of QR-bill
  payments the camt.054 reported one by one) is reconciled with its transactions by their shared
  AcctSvcrRef, or by the same booking date, number and sum; it is never booked itself. One that says
  it is a batch and whose transactions have not come yet waits for them, unbooked.
- A debit that takes back an earlier credit (RvslInd, a return, or the same end-to-end id/reference and
  amount) reverses it: the payment is taken back in the ledger, the bills it paid are open again and
  staff are told.
"""

import hashlib
import logging
from decimal import Decimal
from itertools import combinations

from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from accounts import audit
from billing import ledger
from billing.actions import do_record_payment, unsettle
from billing.camt import CamtError, ParsedEntry, parse
from billing.choices import BankEntryState, BillState, JournalKind, LedgerAccount, PaymentMethodKind
from billing.models import BankEntry, BankImport, BankStatement, Bill, Payment
from billing.notify import tell_staff
from billing.periods import local_midnight

logger = logging.getLogger(__name__)

# Credits a reversal can take back, and transactions a collective booking can be made of.
BOOKED_CREDIT_STATES = (BankEntryState.MATCHED, BankEntryState.ASSIGNED, BankEntryState.UNMATCHED)
MAX_COMBINATION_CANDIDATES = 16


def import_statement(actor, filename: str, data: bytes) -> tuple[BankStatement, bool]:
    """Returns (statement, created). The same file again returns the first import and changes nothing.
    Raises CamtError (nothing is written) for a file we cannot read. All in one transaction."""
    digest = hashlib.sha256(data).hexdigest()
    existing = BankStatement.objects.filter(sha256=digest).first()
    if existing is not None:
        return existing, False
    message = parse(data)
    try:
        with transaction.atomic():
            statement = _start(actor, filename, digest, message)
            for_staff = _import_entries(actor, statement, message.entries)
            return _finish(actor, statement, for_staff), True
    except IntegrityError:
        # Another upload of this very file won the race.
        existing = BankStatement.objects.filter(sha256=digest).first()
        if existing is None:
            raise
        return existing, False


CHUNK = 500


def run_background_import(bank_import: BankImport) -> BankImport:
    """A large file, imported by the worker in chunks of CHUNK entries, each in its own transaction, the
    progress saved after each (the staff page shows it). A chunk that fails rolls back alone; running
    the import again continues where it stopped (entries seen before are duplicates, never booked twice)."""
    BankImport.objects.filter(pk=bank_import.pk).update(state=BankImport.State.RUNNING, error="")
    try:
        message = parse(bytes(bank_import.data))
        BankImport.objects.filter(pk=bank_import.pk).update(total=len(message.entries))
        with transaction.atomic():
            statement = BankStatement.objects.filter(sha256=bank_import.sha256).first()
            if statement is None:
                statement = _start(bank_import.created_by, bank_import.filename, bank_import.sha256, message)
            elif bank_import.statement_id != statement.pk and bank_import.done == 0:
                # This very file was imported before (by hand or another job): nothing to do.
                BankImport.objects.filter(pk=bank_import.pk).update(
                    state=BankImport.State.DONE, statement=statement, done=len(message.entries),
                    error="This file was imported before; nothing changed.", finished_at=timezone.now())
                return BankImport.objects.get(pk=bank_import.pk)
            BankImport.objects.filter(pk=bank_import.pk).update(statement=statement)
        for_staff = []
        for start in range(0, len(message.entries), CHUNK):
            with transaction.atomic():
                for_staff += _import_entries(bank_import.created_by, statement, message.entries[start:start + CHUNK])
            BankImport.objects.filter(pk=bank_import.pk).update(done=min(start + CHUNK, len(message.entries)))
        with transaction.atomic():
            _finish(bank_import.created_by, statement, for_staff)
        BankImport.objects.filter(pk=bank_import.pk).update(state=BankImport.State.DONE, finished_at=timezone.now())
    except CamtError as error:
        BankImport.objects.filter(pk=bank_import.pk).update(state=BankImport.State.FAILED, error=str(error)[:1000],
                                                            finished_at=timezone.now())
    except Exception as error:
        logger.exception("bank import %s failed", bank_import.uuid)
        BankImport.objects.filter(pk=bank_import.pk).update(
            state=BankImport.State.FAILED, error=f"Failed at entry {bank_import.done}: {error}"[:1000],
            finished_at=timezone.now())
    return BankImport.objects.get(pk=bank_import.pk)


def start_background_import(actor, filename: str, data: bytes) -> BankImport:
    """Queue a file for the worker (billing.import_bank_file, enqueued by name once this commits)."""
    from celery import current_app

    bank_import = BankImport.objects.create(filename=filename[:255], sha256=hashlib.sha256(data).hexdigest(),
                                           data=data, created_by=actor)
    transaction.on_commit(lambda: current_app.send_task("billing.import_bank_file", args=[bank_import.pk]))
    audit.record(actor, "bank_statement.queue", target=bank_import, filename=filename, size=len(data))
    return bank_import


def _start(actor, filename, digest, message) -> BankStatement:
    return BankStatement.objects.create(kind=message.kind, message_id=message.message_id[:100],
                                        filename=filename[:255], sha256=digest, imported_by=actor)


def _import_entries(actor, statement, entries) -> list[str]:
    """Book these entries of `statement` (counts added to it); returns what staff should hear."""
    counts = {"total": 0, "matched": 0, "unmatched": 0, "duplicate": 0}
    keys = [e.key for e in entries]
    fingerprints = [e.fingerprint for e in entries]
    seen = set()
    for key, fingerprint in BankEntry.objects.filter(Q(entry_key__in=keys) | Q(fingerprint__in=fingerprints)
                                                     ).values_list("entry_key", "fingerprint"):
        seen.update((key, fingerprint))
    for_staff = []
    for parsed in entries:
        counts["total"] += 1
        if parsed.key in seen or parsed.fingerprint in seen:
            counts["duplicate"] += 1
            continue
        seen.update((parsed.key, parsed.fingerprint))
        entry = _new_entry(statement, parsed)
        if not parsed.is_credit:
            _book_debit(actor, entry, parsed, for_staff)
        elif not parsed.has_details and _reconcile_collective(entry):
            pass
        elif not parsed.has_details and parsed.is_batch:
            entry.state = BankEntryState.AWAITING_DETAILS
            entry.save()
            for_staff.append(f"Collective booking {entry.amount} {entry.currency} ({entry.entry_reference or 'no ref'})"
                             " waits for its transactions (the camt.054); it is not booked until then.")
        elif _book_credit(actor, entry, parsed):
            counts["matched"] += 1
        else:
            counts["unmatched"] += 1
            for_staff.append(f"Unmatched: {entry.amount} {entry.currency} from {entry.debtor_name or '?'} "
                             f"({entry.reference or entry.remittance_info[:60] or 'no reference'})")
    BankStatement.objects.filter(pk=statement.pk).update(
        entries_total=F("entries_total") + counts["total"], entries_matched=F("entries_matched") + counts["matched"],
        entries_unmatched=F("entries_unmatched") + counts["unmatched"],
        entries_duplicate=F("entries_duplicate") + counts["duplicate"],
    )
    return for_staff


def _finish(actor, statement, for_staff) -> BankStatement:
    # Transactions that came after their collective booking complete it now.
    for collective in BankEntry.objects.filter(has_details=False, is_credit=True, collective__isnull=True,
                                               state__in=(BankEntryState.AWAITING_DETAILS, BankEntryState.UNMATCHED)):
        _reconcile_collective(collective)
    statement.refresh_from_db()
    audit.record(actor, "bank_statement.import", target=statement, filename=statement.filename,
                 total=statement.entries_total, matched=statement.entries_matched,
                 unmatched=statement.entries_unmatched, duplicate=statement.entries_duplicate)
    if for_staff:
        tell_staff(f"Bank file {statement.filename}: {len(for_staff)} entries need a look",
                   "\n".join(for_staff[:200]) + "\n\nStaff page: /billing/staff/bank/")
    return statement


def _new_entry(statement, parsed: ParsedEntry) -> BankEntry:
    return BankEntry(
        statement=statement, entry_key=parsed.key, fingerprint=parsed.fingerprint, amount=parsed.amount,
        currency=parsed.currency, is_credit=parsed.is_credit, booking_date=parsed.booking_date,
        value_date=parsed.value_date, reference=parsed.reference, remittance_info=parsed.remittance_info,
        debtor_name=parsed.debtor_name, debtor_iban=parsed.debtor_iban, end_to_end_id=parsed.end_to_end_id,
        entry_reference=parsed.entry_reference, has_details=parsed.has_details, is_batch=parsed.is_batch,
        batch_size=parsed.batch_size, is_reversal=parsed.is_reversal,
    )


def _book_credit(actor, entry: BankEntry, parsed: ParsedEntry) -> bool:
    """Matched to a bill by reference (True), or booked to suspense for staff (False)."""
    bill = (Bill.objects.filter(reference=parsed.reference).exclude(state=BillState.CANCELLED)
            .select_related("account").first() if parsed.reference else None)
    if bill is not None and bill.currency == parsed.currency:
        entry.state, entry.bill, entry.account = BankEntryState.MATCHED, bill, bill.account
        entry.save()
        payment = do_record_payment(
            bill.account, PaymentMethodKind.BANK_TRANSFER, parsed.amount, bill=bill,
            received_at=local_midnight(parsed.booking_date) if parsed.booking_date else None,
            note=f"Bank transfer {parsed.debtor_name}".strip(), actor=actor,
        )
        BankEntry.objects.filter(pk=entry.pk).update(payment=payment)
        return True
    entry.state = BankEntryState.UNMATCHED
    entry.save()
    ledger.post(JournalKind.UNMATCHED, [(LedgerAccount.BANK, None, parsed.amount),
                                        (LedgerAccount.SUSPENSE, None, -parsed.amount)],
                memo=f"Unmatched: {parsed.debtor_name} {parsed.reference}", currency=parsed.currency,
                bank_entry=entry)
    return False


# Debits: reversals of our credits, or money we sent (ignored) ---------------------------------------

def credit_reversed_by(parsed: ParsedEntry) -> BankEntry | None:
    """The earlier credit a debit takes back: same amount and currency, not reversed yet, and the same
    end-to-end id, or the same payment reference, or (for an entry marked as a reversal or return)
    the same counterparty account."""
    candidates = (BankEntry.objects.filter(is_credit=True, amount=parsed.amount, currency=parsed.currency,
                                           state__in=BOOKED_CREDIT_STATES, has_details=True)
                  .order_by("-booking_date", "-id"))
    if parsed.end_to_end_id:
        found = candidates.filter(end_to_end_id=parsed.end_to_end_id).first()
        if found is not None:
            return found
    if parsed.reference:
        found = candidates.filter(reference=parsed.reference).first()
        if found is not None:
            return found
    if parsed.is_reversal and parsed.debtor_iban:
        return candidates.filter(debtor_iban=parsed.debtor_iban).first()
    return None


def _book_debit(actor, entry: BankEntry, parsed: ParsedEntry, for_staff: list) -> None:
    original = credit_reversed_by(parsed)
    if original is not None:
        reverse_credit(actor, original, entry)
        for_staff.append(f"Reversal: {entry.amount} {entry.currency} taken back by the bank "
                         f"({original.debtor_name or original.reference}); "
                         + (f"customer {original.account} owes it again." if original.account else "it was unmatched."))
        return
    if parsed.is_reversal:
        # Money taken back that we cannot place: in suspense (negative) until staff find the credit.
        entry.state = BankEntryState.UNMATCHED
        entry.save()
        ledger.post(JournalKind.REVERSAL, [(LedgerAccount.SUSPENSE, None, parsed.amount),
                                           (LedgerAccount.BANK, None, -parsed.amount)],
                    memo=f"Unplaced reversal {parsed.reference}", currency=parsed.currency, bank_entry=entry)
        for_staff.append(f"Reversal of {entry.amount} {entry.currency} ({entry.reference or 'no reference'}) "
                         "matches no credit we booked: find it by hand.")
        return
    entry.state = BankEntryState.IGNORED  # bank fees, our own payments: not customer money
    entry.save()


def reverse_credit(actor, original: BankEntry, reversal: BankEntry) -> None:
    """`reversal` (a debit) takes `original` (a credit) back: the payment it made is undone in the
    ledger, the bills it paid are open again."""
    original = BankEntry.objects.select_for_update().get(pk=original.pk)
    reversal.state, reversal.reverses = BankEntryState.REVERSAL, original
    reversal.account, reversal.bill = original.account, original.bill
    reversal.save()
    amount = reversal.amount
    if original.payment_id is not None:
        payment = Payment.objects.select_for_update().get(pk=original.payment_id)
        ledger.post(JournalKind.REVERSAL, [(LedgerAccount.RECEIVABLE, payment.account, amount),
                                           (LedgerAccount.BANK, None, -amount)],
                    memo=f"Bank reversal of {payment}", currency=reversal.currency, payment=payment,
                    bank_entry=reversal)
        Payment.objects.filter(pk=payment.pk).update(reversed_at=timezone.now())
        reopened = unsettle(payment.account, prefer_bill=payment.bill, why=f"bank reversal {reversal.entry_key}")
        audit.record(actor, "bank_entry.reversal", target=reversal, payment=str(payment.uuid),
                     reopened=[bill.number for bill in reopened])
    else:
        # It was waiting in suspense: it leaves the bank as it came.
        ledger.post(JournalKind.REVERSAL, [(LedgerAccount.SUSPENSE, None, amount), (LedgerAccount.BANK, None, -amount)],
                    memo=f"Bank reversal of an unmatched entry from {original.debtor_name}",
                    currency=reversal.currency, bank_entry=reversal)
        audit.record(actor, "bank_entry.reversal", target=reversal, unmatched=str(original.uuid))
    BankEntry.objects.filter(pk=original.pk).update(state=BankEntryState.REVERSED)


# Collective bookings -------------------------------------------------------------------------------

def _details_of(collective: BankEntry) -> list[BankEntry] | None:
    """The transactions a collective booking is made of, or None. By the booking's AcctSvcrRef first
    (banks give the booking and its transactions the same one); else, for a booking that says it is a
    batch, the unclaimed credits of the same booking date from other files whose number and sum fit."""
    candidates = BankEntry.objects.filter(is_credit=True, has_details=True, collective__isnull=True,
                                          currency=collective.currency).exclude(pk=collective.pk)
    if collective.entry_reference:
        family = list(candidates.filter(entry_reference=collective.entry_reference))
        if family and sum((e.amount for e in family), Decimal("0.00")) == collective.amount:
            return family
    if not (collective.is_batch or collective.batch_size) or collective.booking_date is None:
        return None
    same_day = list(candidates.filter(booking_date=collective.booking_date, state__in=BOOKED_CREDIT_STATES)
                    .exclude(statement_id=collective.statement_id).order_by("id")[:MAX_COMBINATION_CANDIDATES + 1])
    if len(same_day) > MAX_COMBINATION_CANDIDATES:
        return None  # too many to try; staff decide
    sizes = [collective.batch_size] if collective.batch_size else range(2, len(same_day) + 1)
    found = [group for size in sizes if size <= len(same_day) for group in combinations(same_day, size)
             if sum((e.amount for e in group), Decimal("0.00")) == collective.amount]
    return list(found[0]) if len(found) == 1 else None  # two ways to make the sum: not ours to guess


def _reconcile_collective(collective: BankEntry) -> bool:
    """Link a collective booking to its transactions (booked one by one) and make sure the money is
    in the books once: a booking queued as unmatched before its transactions came leaves suspense."""
    details = _details_of(collective)
    if not details:
        return False
    if collective.pk is None:
        collective.state = BankEntryState.COLLECTIVE
        collective.save()
    else:
        if collective.state == BankEntryState.UNMATCHED:
            ledger.post(JournalKind.COLLECTIVE, [(LedgerAccount.SUSPENSE, None, collective.amount),
                                                 (LedgerAccount.BANK, None, -collective.amount)],
                        memo="Collective booking booked in detail", currency=collective.currency,
                        bank_entry=collective)
        BankEntry.objects.filter(pk=collective.pk).update(state=BankEntryState.COLLECTIVE)
    BankEntry.objects.filter(pk__in=[e.pk for e in details]).update(collective=collective)
    audit.record(None, "bank_entry.collective", target=collective, transactions=len(details))
    return True


def suspense_total() -> Decimal:
    """Money on the bank account no customer has been credited with yet (staff's queue)."""
    total = BankEntry.objects.filter(state=BankEntryState.UNMATCHED, is_credit=True).aggregate(t=Sum("amount"))["t"]
    return total or Decimal("0.00")
