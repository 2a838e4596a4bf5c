"""Importing a camt file: book each new entry, match it to a bill by reference, or queue it for staff."""

import hashlib
import logging

from django.db import IntegrityError, transaction

from accounts import audit
from billing import ledger
from billing.camt import parse
from billing.choices import BankEntryState, BillState, JournalKind, LedgerAccount, PaymentMethodKind
from billing.models import BankEntry, BankStatement, Bill
from billing.periods import local_midnight

logger = logging.getLogger(__name__)


def import_statement(actor, filename: str, data: bytes) -> tuple[BankStatement, bool]:
    """Returns (statement, created). The same file again returns the first import and changes nothing.
    Raises CamtError (nothing is written) for a file we cannot read."""
    digest = hashlib.sha256(data).hexdigest()
    existing = BankStatement.objects.filter(sha256=digest).first()
    if existing is not None:
        return existing, False
    message = parse(data)
    try:
        with transaction.atomic():
            return _import(actor, filename, digest, message), True
    except IntegrityError:
        # Another upload of this very file won the race.
        existing = BankStatement.objects.filter(sha256=digest).first()
        if existing is None:
            raise
        return existing, False


def _import(actor, filename, digest, message) -> BankStatement:
    from billing.actions import do_record_payment

    statement = BankStatement.objects.create(kind=message.kind, message_id=message.message_id[:100],
                                             filename=filename[:255], sha256=digest, imported_by=actor)
    counts = {"total": 0, "matched": 0, "unmatched": 0, "duplicate": 0}
    seen_keys = set(BankEntry.objects.filter(entry_key__in=[e.key for e in message.entries])
                    .values_list("entry_key", flat=True))
    for parsed in message.entries:
        counts["total"] += 1
        if parsed.key in seen_keys:
            counts["duplicate"] += 1
            continue
        seen_keys.add(parsed.key)
        entry = BankEntry(
            statement=statement, entry_key=parsed.key, amount=parsed.amount, currency=parsed.currency,
            is_credit=parsed.is_credit, booking_date=parsed.booking_date, value_date=parsed.value_date,
            reference=parsed.reference, remittance_info=parsed.remittance_info, debtor_name=parsed.debtor_name,
            debtor_iban=parsed.debtor_iban,
        )
        if not parsed.is_credit:
            entry.state = BankEntryState.IGNORED
            entry.save()
            continue
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
            counts["matched"] += 1
        else:
            entry.state = BankEntryState.UNMATCHED
            entry.save()
            ledger.post(JournalKind.UNMATCHED, [(LedgerAccount.BANK, None, parsed.amount),
                                                (LedgerAccount.SUSPENSE, None, -parsed.amount)],
                        memo=f"Unmatched: {parsed.debtor_name} {parsed.reference}", currency=parsed.currency,
                        bank_entry=entry)
            counts["unmatched"] += 1
    BankStatement.objects.filter(pk=statement.pk).update(
        entries_total=counts["total"], entries_matched=counts["matched"], entries_unmatched=counts["unmatched"],
        entries_duplicate=counts["duplicate"],
    )
    audit.record(actor, "bank_statement.import", target=statement, filename=filename, **counts)
    statement.refresh_from_db()
    return statement
