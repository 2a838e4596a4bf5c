"""Human sizes ("2GiB", "512M", "20G") to integers.

K, M, G and T are binary (powers of 1024), with or without "iB"/"B", as qemu-img and most
hypervisor tools read them. A bare number is taken in the unit of the field it is given for.
"""

import re
from decimal import Decimal, InvalidOperation

_FACTORS = {"": None, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_PATTERN = re.compile(r"^\s*(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[KMGTP]?)(?:i?B)?\s*$", re.IGNORECASE | re.ASCII)

ACCEPTED = 'a whole number of MiB, or a size like "512M", "512MiB", "2G", "2GiB", "1.5T" (K/M/G/T are powers of 1024)'


class UnitError(ValueError):
    pass


def parse_size(value, unit_bytes: int) -> int:
    """Return `value` as a whole number of units of `unit_bytes` bytes (e.g. 1024**2 for MiB)."""
    if isinstance(value, bool):
        raise UnitError(f"{value!r} is not a size; expected {_accepted(unit_bytes)}")
    if isinstance(value, int):
        if value < 0:
            raise UnitError("a size cannot be negative")
        return value
    if not isinstance(value, str):
        raise UnitError(f"{value!r} is not a size; expected {_accepted(unit_bytes)}")
    match = _PATTERN.match(value)
    if not match or (match.group("unit") == "" and value.strip().lower().endswith("ib")):
        raise UnitError(f"{value!r} is not a size; expected {_accepted(unit_bytes)}")
    try:
        number = Decimal(match.group("number"))
    except InvalidOperation:
        raise UnitError(f"{value!r} is not a size") from None
    factor = _FACTORS[match.group("unit").upper()]
    total_bytes = number * (factor if factor is not None else unit_bytes)
    units = total_bytes / unit_bytes
    if units != units.to_integral_value():
        raise UnitError(f"{value!r} is not a whole number of {_unit_name(unit_bytes)}")
    return int(units)


def parse_mib(value) -> int:
    return parse_size(value, 1024**2)


def parse_gib(value) -> int:
    return parse_size(value, 1024**3)


def format_mib(mib: int) -> str:
    for suffix, factor in (("TiB", 1024**2), ("GiB", 1024), ("MiB", 1)):
        if mib >= factor and mib % factor == 0:
            return f"{mib // factor}{suffix}"
    return f"{mib}MiB"


def _unit_name(unit_bytes: int) -> str:
    return {1: "bytes", 1024: "KiB", 1024**2: "MiB", 1024**3: "GiB"}.get(unit_bytes, f"{unit_bytes}-byte units")


def _accepted(unit_bytes: int) -> str:
    return ACCEPTED.replace("MiB", _unit_name(unit_bytes), 1)


def human_mib(mib: int | None) -> str:
    """A size in MiB as people read it: "512 MiB", "35 GiB", "1.5 GiB", "500 GiB", "2 TiB".
    Binary units, like the sizes the API and forms take; at most one decimal, none when exact."""
    if mib is None:
        return "—"
    for suffix, factor in (("TiB", 1024**2), ("GiB", 1024)):
        if mib >= factor:
            value = round(mib / factor, 1)
            return f"{value:g} {suffix}" if value != int(value) else f"{int(value)} {suffix}"
    return f"{mib} MiB"
