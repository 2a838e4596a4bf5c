"""Text for the Swiss QR-bill: only the character set of the Swiss Payment Standards (Implementation
Guidelines QR-bill, "Character set"): Basic Latin, Latin-1 Supplement, Latin Extended-A, Ș ș Ț ț and €.

Other letters are transliterated where Unicode knows their Latin base letter (ǅ -> DZ, ą stays, ḱ -> k);
what has none (emoji, CJK) becomes ".", so the payload is valid and the printed bill shows no boxes.
"""

import unicodedata

EXTRA_ALLOWED = frozenset("ȘșȚț€")
REPLACEMENT = "."


def is_allowed(char: str) -> bool:
    code = ord(char)
    return 0x20 <= code <= 0x7E or 0xA0 <= code <= 0x17F or char in EXTRA_ALLOWED


def swiss_payment_text(text: str, max_length: int | None = None) -> str:
    out = []
    for char in text or "":
        if is_allowed(char):
            out.append(char)
            continue
        if char in "\t\n\r":
            out.append(" ")
            continue
        base = "".join(part for part in unicodedata.normalize("NFKD", char) if is_allowed(part))
        out.append(base or REPLACEMENT)
    result = "".join(out)
    # Several unknown characters in a row (a word of CJK, a run of emoji) become one replacement.
    while REPLACEMENT * 2 in result and not (text or "").count(REPLACEMENT * 2):
        result = result.replace(REPLACEMENT * 2, REPLACEMENT)
    result = " ".join(result.split())
    return result[:max_length] if max_length else result
