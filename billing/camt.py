"""ISO 20022 bank-to-customer messages: camt.054 (debit/credit notification) and camt.053
(statement), any version (camt.05x.001.NN).

Parsed with defusedxml (expat): a DOCTYPE, entity or external reference is refused by the parser
itself, whatever the file's encoding (UTF-16 included) and wherever the declaration stands.

A booked entry (Ntry) may carry many transactions (TxDtls, e.g. a batch of QR-bill payments); each
transaction is one payment and is matched by its structured reference (QRR or SCOR). An entry
without transaction details is one booking; when it says it is a batch (Btch/NbOfTxs > 1,
BtchBookg) it is a collective booking of transactions reported one by one elsewhere (the camt.054)
and is reconciled, never booked again (billing/bank_import.py).
"""

import hashlib
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from stdnum import iso11649
from stdnum.ch import esr

from billing.choices import CamtKind
from billing.references import normalize_reference

MAX_FILE_BYTES = 20 * 1024 * 1024
NAMESPACE = re.compile(r"^urn:iso:std:iso:20022:tech:xsd:(camt\.05[34])\.001\.\d\d$")
# Creditor references in free text as people write them: "RF18 5390 0754 7034", "rf741".
SCOR_IN_TEXT = re.compile(r"(?<![0-9A-Z])RF\d{2}(?:[ ]?[0-9A-Z]){1,21}", re.IGNORECASE)
QRR_IN_TEXT = re.compile(r"(?<!\d)\d{1,2}(?:[ ]?\d){25,26}(?!\d)")
NOT_PROVIDED = "NOTPROVIDED"


class CamtError(ValueError):
    """The file is not a camt.053/054 message we can read; the text says why."""


@dataclass
class ParsedEntry:
    key: str  # the bank's own reference of the transaction, else the fingerprint
    fingerprint: str  # what identifies the money itself (see _fingerprint)
    amount: Decimal
    currency: str
    is_credit: bool
    booking_date: date | None
    value_date: date | None
    reference: str
    remittance_info: str
    debtor_name: str
    debtor_iban: str
    end_to_end_id: str = ""
    is_reversal: bool = False
    entry_reference: str = ""  # the Ntry's AcctSvcrRef: a collective booking and its details share it
    has_details: bool = True  # False: an Ntry without TxDtls
    batch_size: int | None = None  # NbOfTxs of a batch booking, when given
    is_batch: bool = False  # an Ntry without details that says it is a batch


@dataclass
class ParsedMessage:
    kind: str
    message_id: str
    entries: list[ParsedEntry]


def _localname(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return "", tag


def parse(data: bytes) -> ParsedMessage:
    if len(data) > MAX_FILE_BYTES:
        raise CamtError(f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB.")
    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise CamtError("The file declares a DTD or entities; bank messages never do. Refused.") from None
    except ParseError as error:
        raise CamtError(f"This is not well-formed XML: {error}") from None
    namespace, local = _localname(root.tag)
    match = NAMESPACE.match(namespace)
    if local != "Document" or match is None:
        raise CamtError("This is not an ISO 20022 camt.053 or camt.054 document "
                        f"(root {local!r} in namespace {namespace!r}).")
    kind = CamtKind.CAMT054 if match.group(1) == "camt.054" else CamtKind.CAMT053
    ns = {"c": namespace}
    message = root.find("c:BkToCstmrDbtCdtNtfctn" if kind == CamtKind.CAMT054 else "c:BkToCstmrStmt", ns)
    if message is None:
        raise CamtError("The document has no notification/statement body.")
    message_id = _text(message, "c:GrpHdr/c:MsgId", ns)
    if not message_id:
        raise CamtError("The message has no GrpHdr/MsgId.")
    reports = message.findall("c:Ntfctn" if kind == CamtKind.CAMT054 else "c:Stmt", ns)
    entries = []
    for report in reports:
        for entry in report.findall("c:Ntry", ns):
            entries += _entries_of(entry, ns)
    _number_repeated_fingerprints(entries)
    return ParsedMessage(kind=kind, message_id=message_id, entries=entries)


def _entries_of(entry, ns) -> list[ParsedEntry]:
    status = _text(entry, "c:Sts", ns) or _text(entry, "c:Sts/c:Cd", ns)
    if status and status != "BOOK":
        return []  # pending or informational: it is reported again once booked
    entry_amount, entry_currency = _amount(entry.find("c:Amt", ns), "Ntry/Amt")
    indicator = _text(entry, "c:CdtDbtInd", ns)
    if indicator not in ("CRDT", "DBIT"):
        raise CamtError(f"Entry {_text(entry, 'c:AcctSvcrRef', ns)!r}: CdtDbtInd must be CRDT or DBIT, "
                        f"not {indicator!r}.")
    # RvslInd says the entry takes back an earlier one of the other direction; CdtDbtInd still says
    # which way this money goes (DBIT + RvslInd: a credit we had is taken back).
    entry_reversal = _text(entry, "c:RvslInd", ns).lower() == "true"
    booking = _date(entry, "c:BookgDt", ns)
    value = _date(entry, "c:ValDt", ns)
    entry_ref = _text(entry, "c:AcctSvcrRef", ns)
    transactions = entry.findall("c:NtryDtls/c:TxDtls", ns)
    batch_count = _text(entry, "c:NtryDtls/c:Btch/c:NbOfTxs", ns) or _text(entry, "c:NbOfTxs", ns)
    batch_size = int(batch_count) if batch_count.isdigit() else None
    if not transactions:
        info = _text(entry, "c:AddtlNtryInf", ns)
        is_batch = (batch_size or 0) > 1 or _text(entry, "c:BtchBookg", ns).lower() == "true"
        fingerprint = _fingerprint(indicator, "", _reference_in(info), entry_amount, entry_currency, value or booking,
                                   "", entry_ref)
        return [ParsedEntry(
            key=entry_ref or fingerprint, fingerprint=fingerprint, amount=entry_amount, currency=entry_currency,
            is_credit=indicator == "CRDT", booking_date=booking, value_date=value,
            reference=_reference_in(info), remittance_info=info[:2000], debtor_name="", debtor_iban="",
            is_reversal=entry_reversal, entry_reference=entry_ref[:100], has_details=False, batch_size=batch_size,
            is_batch=is_batch,
        )]
    parsed = []
    for index, tx in enumerate(transactions):
        amount_node = tx.find("c:Amt", ns)
        if amount_node is None:
            amount_node = tx.find("c:AmtDtls/c:TxAmt/c:Amt", ns)
        if amount_node is None and len(transactions) == 1:
            amount_node = entry.find("c:Amt", ns)
        amount, currency = _amount(amount_node, f"TxDtls {index}")
        tx_indicator = _text(tx, "c:CdtDbtInd", ns) or indicator
        if tx_indicator not in ("CRDT", "DBIT"):
            raise CamtError(f"TxDtls {index}: CdtDbtInd must be CRDT or DBIT, not {tx_indicator!r}.")
        reversal = entry_reversal or _text(tx, "c:RvslInd", ns).lower() == "true" or \
            _text(tx, "c:RtrInf/c:Rsn/c:Cd", ns) != ""
        end_to_end = _text(tx, "c:Refs/c:EndToEndId", ns)
        if end_to_end.upper() == NOT_PROVIDED:
            end_to_end = ""
        reference = normalize_reference(_text(tx, "c:RmtInf/c:Strd/c:CdtrRefInf/c:Ref", ns))
        unstructured = " ".join(node.text.strip() for node in tx.findall("c:RmtInf/c:Ustrd", ns) if node.text)
        if not reference:
            reference = _reference_in(unstructured)
        debtor_name = (_text(tx, "c:RltdPties/c:Dbtr/c:Nm", ns) or _text(tx, "c:RltdPties/c:Dbtr/c:Pty/c:Nm", ns))
        debtor_iban = _text(tx, "c:RltdPties/c:DbtrAcct/c:Id/c:IBAN", ns)
        if tx_indicator == "DBIT":
            # For money going out the other party is the creditor.
            debtor_name = debtor_name or _text(tx, "c:RltdPties/c:Cdtr/c:Nm", ns) or \
                _text(tx, "c:RltdPties/c:Cdtr/c:Pty/c:Nm", ns)
            debtor_iban = debtor_iban or _text(tx, "c:RltdPties/c:CdtrAcct/c:Id/c:IBAN", ns)
        bank_ref = _text(tx, "c:Refs/c:AcctSvcrRef", ns)
        fingerprint = _fingerprint(tx_indicator, end_to_end, reference, amount, currency, value or booking,
                                   debtor_iban, _text(tx, "c:Refs/c:TxId", ns) or _text(tx, "c:Refs/c:InstrId", ns))
        parsed.append(ParsedEntry(
            key=(bank_ref or fingerprint)[:200], fingerprint=fingerprint, amount=amount, currency=currency,
            is_credit=tx_indicator == "CRDT", booking_date=booking, value_date=value, reference=reference[:40],
            remittance_info=unstructured[:2000], debtor_name=debtor_name[:140], debtor_iban=debtor_iban[:34],
            end_to_end_id=end_to_end[:100], is_reversal=reversal, entry_reference=entry_ref[:100],
            batch_size=batch_size,
        ))
    return parsed


def _fingerprint(indicator, end_to_end, reference, amount, currency, value_date, debtor_iban, tx_id) -> str:
    """What identifies the money whatever message reports it: a notification re-sent with a new MsgId,
    or the statement reporting it again without the bank's reference, gives the same fingerprint."""
    parts = [indicator, end_to_end, tx_id, reference, f"{amount:.2f}", currency,
             value_date.isoformat() if value_date else "", re.sub(r"\s+", "", debtor_iban).upper()]
    return "fp:" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:60]


def _number_repeated_fingerprints(entries) -> None:
    """Two equal transactions in one message are two payments: the second is "#2" (and a later
    message reporting both again yields the same two fingerprints)."""
    seen: dict[str, int] = {}
    for entry in entries:
        count = seen.get(entry.fingerprint, 0) + 1
        seen[entry.fingerprint] = count
        if count > 1:
            numbered = f"{entry.fingerprint}#{count}"
            if entry.key == entry.fingerprint:
                entry.key = numbered
            entry.fingerprint = numbered


def _reference_in(text: str) -> str:
    """A payment reference written in free text, by its own syntax and check digits: an ISO 11649
    creditor reference (groups of up to four characters may be separated by single spaces) or a
    27-digit QRR reference. Words around it are not part of it ("Rechnung rf74 1 danke" -> RF741)."""
    for found in SCOR_IN_TEXT.finditer(text or ""):
        groups = found.group(0).upper().split(" ")
        # The longest run of whole groups that is a valid reference.
        for end in range(len(groups), 0, -1):
            candidate = "".join(groups[:end])
            if len(candidate) >= 5 and iso11649.is_valid(candidate):
                return candidate
    for found in QRR_IN_TEXT.finditer(text or ""):
        candidate = found.group(0).replace(" ", "")
        if len(candidate) == 27 and esr.is_valid(candidate):
            return candidate
    return ""


def _text(node, path, ns) -> str:
    found = node.find(path, ns)
    return (found.text or "").strip() if found is not None else ""


def _amount(node, where) -> tuple[Decimal, str]:
    if node is None:
        raise CamtError(f"{where}: no amount.")
    currency = (node.get("Ccy") or "").strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise CamtError(f"{where}: the amount has no valid currency.")
    try:
        amount = Decimal((node.text or "").strip())
    except InvalidOperation:
        raise CamtError(f"{where}: {node.text!r} is not an amount.") from None
    if not amount.is_finite() or amount <= 0 or amount != amount.quantize(Decimal("0.01")):
        raise CamtError(f"{where}: {node.text!r} is not a positive amount with at most two decimals.")
    return amount.quantize(Decimal("0.01")), currency


def _date(node, path, ns) -> date | None:
    text = _text(node, f"{path}/c:Dt", ns) or _text(node, f"{path}/c:DtTm", ns)[:10]
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CamtError(f"{text!r} is not a date.") from None
