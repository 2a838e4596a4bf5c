"""Payment references that identify a bill: QRR (with a QR-IBAN) or the ISO 11649 creditor
reference SCOR ("RF..", with an ordinary IBAN). Both are made from the bill number alone."""

import re

from stdnum.ch import esr
from stdnum.iso7064 import mod_97_10


def compact_iban(iban: str) -> str:
    return re.sub(r"\s+", "", iban or "").upper()


def is_qr_iban(iban: str) -> bool:
    # A QR-IBAN has an institution id (IID, positions 5-9) between 30000 and 31999.
    iban = compact_iban(iban)
    return iban[:2] in ("CH", "LI") and iban[4:9].isdigit() and 30000 <= int(iban[4:9]) <= 31999


def qrr_reference(number: int) -> str:
    body = f"{number:026d}"
    return body + esr.calc_check_digit(body)


def scor_reference(number: int) -> str:
    body = str(number)
    return f"RF{mod_97_10.calc_check_digits(body + 'RF')}{body}"


def bill_reference(number: int, iban: str) -> str:
    return qrr_reference(number) if is_qr_iban(iban) else scor_reference(number)


def normalize_reference(text: str) -> str:
    return re.sub(r"\s+", "", text or "").upper()


def format_reference(reference: str) -> str:
    """Groups of five from the right for QRR, groups of four for SCOR, as printed on bills."""
    if reference.startswith("RF"):
        return " ".join(reference[i:i + 4] for i in range(0, len(reference), 4))
    head = len(reference) % 5
    parts = [reference[:head]] if head else []
    parts += [reference[i:i + 5] for i in range(head, len(reference), 5)]
    return " ".join(parts)
