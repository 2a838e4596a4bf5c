"""What a domain name must look like before anything stores it or writes it into a proxy config."""

import re

LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def normalize_domain_name(text: str) -> str:
    """The name in its one stored form (lower case, ASCII: IDNs as punycode, no trailing dot), or
    ValueError saying what is wrong."""
    name = (text or "").strip().rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError("This is not a valid domain name.") from None
    labels = name.split(".")
    if not 3 < len(name) <= 253 or len(labels) < 2:
        raise ValueError("Give a full domain name such as www.example.org.")
    if not all(LABEL_RE.match(label) for label in labels):
        raise ValueError("A domain name has labels of letters, digits and inner hyphens, separated by dots; "
                         "wildcards are not served.")
    if labels[-1].isdigit():
        raise ValueError("That is an address, not a domain name.")
    return name
