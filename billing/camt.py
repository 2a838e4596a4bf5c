"""ISO 20022 bank-to-customer messages: camt.054 (debit/credit notification) and camt.053
(statement), any version (camt.05x.001.NN). Parsed with lxml with entities, DTDs and network off.

A booked entry (Ntry) may carry many transactions (TxDtls, e.g. a batch of QR-bill payments); each
transaction is one payment to us and is matched by its structured reference (QRR or SCOR).
"""

import hashlib
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

from lxml import etree

from billing.choices import CamtKind
from billing.references import normalize_reference

MAX_FILE_BYTES = 20 * 1024 * 1024
NAMESPACE = re.compile(r"^urn:iso:std:iso:20022:tech:xsd:(camt\.05[34])\.001\.\d\d$")
REFERENCE_IN_TEXT = re.compile(r"RF\d{2}[0-9A-Z]{1,21}|\d{27}")


class CamtError(ValueError):
    """The file is not a camt.053/054 message we can read; the text says why."""


@dataclass
class ParsedEntry:
    key: str
    amount: Decimal
    currency: str
    is_credit: bool
    booking_date: date | None
    value_date: date | None
    reference: str
    remittance_info: str
    debtor_name: str
    debtor_iban: str


@dataclass
class ParsedMessage:
    kind: str
    message_id: str
    entries: list[ParsedEntry]


def _parser():
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_comments=True, remove_pis=True)


def parse(data: bytes) -> ParsedMessage:
    if len(data) > MAX_FILE_BYTES:
        raise CamtError(f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB.")
    if b"<!DOCTYPE" in data[:4096].upper() or b"<!ENTITY" in data.upper():
        raise CamtError("The file declares a DTD or entities; bank messages never do. Refused.")
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as error:
        raise CamtError(f"This is not well-formed XML: {error}") from None
    namespace = etree.QName(root).namespace or ""
    match = NAMESPACE.match(namespace)
    if etree.QName(root).localname != "Document" or match is None:
        raise CamtError("This is not an ISO 20022 camt.053 or camt.054 document "
                        f"(root {etree.QName(root).localname!r} in namespace {namespace!r}).")
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
    for report_index, report in enumerate(reports):
        report_id = _text(report, "c:Id", ns) or str(report_index)
        for entry_index, entry in enumerate(report.findall("c:Ntry", ns)):
            entries += _entries_of(entry, ns, f"{message_id}/{report_id}/{entry_index}")
    return ParsedMessage(kind=kind, message_id=message_id, entries=entries)


def _entries_of(entry, ns, fallback_key) -> list[ParsedEntry]:
    status = _text(entry, "c:Sts", ns) or _text(entry, "c:Sts/c:Cd", ns)
    if status and status != "BOOK":
        return []  # pending or informational: it is reported again once booked
    entry_amount, entry_currency = _amount(entry.find("c:Amt", ns), "Ntry/Amt")
    indicator = _text(entry, "c:CdtDbtInd", ns)
    if indicator not in ("CRDT", "DBIT"):
        raise CamtError(f"Entry {fallback_key}: CdtDbtInd must be CRDT or DBIT, not {indicator!r}.")
    if _text(entry, "c:RvslInd", ns).lower() == "true":
        indicator = "DBIT" if indicator == "CRDT" else "CRDT"
    booking = _date(entry, "c:BookgDt", ns)
    value = _date(entry, "c:ValDt", ns)
    entry_ref = _text(entry, "c:AcctSvcrRef", ns)
    transactions = entry.findall("c:NtryDtls/c:TxDtls", ns)
    if not transactions:
        return [ParsedEntry(
            key=entry_ref or hashlib.sha256(fallback_key.encode()).hexdigest(), amount=entry_amount,
            currency=entry_currency, is_credit=indicator == "CRDT", booking_date=booking, value_date=value,
            reference="", remittance_info=_text(entry, "c:AddtlNtryInf", ns), debtor_name="", debtor_iban="",
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
        key = (_text(tx, "c:Refs/c:AcctSvcrRef", ns)
               or (f"{entry_ref}/{index}" if entry_ref else "")
               or hashlib.sha256(f"{fallback_key}/{index}".encode()).hexdigest())
        reference = normalize_reference(_text(tx, "c:RmtInf/c:Strd/c:CdtrRefInf/c:Ref", ns))
        unstructured = " ".join(node.text.strip() for node in tx.findall("c:RmtInf/c:Ustrd", ns) if node.text)
        if not reference:
            found = REFERENCE_IN_TEXT.search(normalize_reference(unstructured))
            reference = found.group(0) if found else ""
        debtor_name = (_text(tx, "c:RltdPties/c:Dbtr/c:Nm", ns) or _text(tx, "c:RltdPties/c:Dbtr/c:Pty/c:Nm", ns))
        parsed.append(ParsedEntry(
            key=key[:200], amount=amount, currency=currency, is_credit=tx_indicator == "CRDT", booking_date=booking,
            value_date=value, reference=reference[:40], remittance_info=unstructured[:2000],
            debtor_name=debtor_name[:140], debtor_iban=_text(tx, "c:RltdPties/c:DbtrAcct/c:Id/c:IBAN", ns)[:34],
        ))
    return parsed


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
