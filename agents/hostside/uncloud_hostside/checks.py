"""Spec validation: everything that reaches a command line passes through one of these first."""

import ipaddress
import os
import re
import uuid as uuid_module

from .addressing import ROUTER_MAC_PREFIX
from .errors import bad_spec
from .paths import MAX_STATE_DIR

# No component may start with "-": a path must never look like an option to any program.
SAFE_PATH_RE = re.compile(r"^(/[A-Za-z0-9._+][A-Za-z0-9._+-]*)+$")
INTERFACE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
# Tap names also become nft chain names, so they get the stricter nft identifier alphabet.
TAP_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,14}$")
VM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
DOMAIN_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
CMDLINE_RE = re.compile(r"^[\x20-\x7e]{0,4096}$")
RESERVED_INTERFACE_PREFIXES = ("br", "vxlan", "lo", "eth", "ul")


def check_fields(spec, required, optional=()):
    if not isinstance(spec, dict):
        raise bad_spec("spec must be a JSON object")
    missing = [name for name in required if name not in spec]
    if missing:
        raise bad_spec(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(set(spec) - set(required) - set(optional))
    if unknown:
        raise bad_spec(f"unknown field(s): {', '.join(unknown)}")


def check_int(value, field, low, high):
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_spec(f"{field} must be an integer")
    if not low <= value <= high:
        raise bad_spec(f"{field} must be between {low} and {high}")
    return value


def check_number(value, field, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_spec(f"{field} must be a number")
    if not low <= value <= high:
        raise bad_spec(f"{field} must be between {low} and {high}")
    return value


def check_bool(value, field):
    if not isinstance(value, bool):
        raise bad_spec(f"{field} must be true or false")
    return value


def check_string(value, field, pattern, explanation):
    if not isinstance(value, str) or not pattern.match(value):
        raise bad_spec(f"{field} is invalid: {explanation}")
    return value


def check_state_dir(value):
    if not isinstance(value, str) or not SAFE_PATH_RE.match(value):
        raise bad_spec("state_dir must be an absolute path of letters, digits and ._/+- "
                       "(no component starting with -)")
    if os.path.normpath(value) != value or value == "/":
        raise bad_spec("state_dir must be a normalised absolute path other than /")
    if len(value) > MAX_STATE_DIR:
        raise bad_spec(f"state_dir is longer than {MAX_STATE_DIR} characters: the QMP socket path "
                       "below it would not fit in a unix socket address")
    return value


def check_path_under(value, field, state_dir):
    """A file the spec names must be an existing regular file below state_dir, symlinks included."""
    if not isinstance(value, str) or not SAFE_PATH_RE.match(value):
        raise bad_spec(f"{field} must be an absolute path of letters, digits and ._/+-")
    if os.path.normpath(value) != value:
        raise bad_spec(f"{field} must be a normalised path")
    if os.path.commonpath([state_dir, value]) != state_dir or value == state_dir:
        raise bad_spec(f"{field} must be below state_dir")
    real_state_dir = os.path.realpath(state_dir)
    real_value = os.path.realpath(value)
    if os.path.commonpath([real_state_dir, real_value]) != real_state_dir:
        raise bad_spec(f"{field} resolves outside state_dir")
    if not os.path.isfile(real_value):
        raise bad_spec(f"{field} is not an existing regular file: {value}")
    return value


def check_vni(value, field="vni"):
    return check_int(value, field, 1, 16777215)


def check_uuid(value):
    if not isinstance(value, str):
        raise bad_spec("uuid must be a string")
    try:
        parsed = uuid_module.UUID(value)
    except ValueError:
        raise bad_spec("uuid is not a UUID") from None
    if str(parsed) != value:
        raise bad_spec("uuid must be in canonical lowercase 8-4-4-4-12 form")
    return value


def check_mac(value, field):
    if not isinstance(value, str) or not MAC_RE.match(value.lower()):
        raise bad_spec(f"{field} must be a MAC address like 02:00:f0:a9:c4:4e")
    mac = value.lower()
    first_octet = int(mac[:2], 16)
    if first_octet & 0x01:
        raise bad_spec(f"{field} must be a unicast MAC")
    if mac == "00:00:00:00:00:00":
        raise bad_spec(f"{field} must not be all zero")
    if tuple(int(part, 16) for part in mac.split(":")[:3]) == ROUTER_MAC_PREFIX:
        raise bad_spec(f"{field} is in the range reserved for network routers (02:75:63:...)")
    return mac


def check_prefix64(value, field="prefix"):
    if not isinstance(value, str):
        raise bad_spec(f"{field} must be a string like 2001:db8:1:1::/64")
    try:
        network = ipaddress.IPv6Network(value, strict=True)
    except ValueError:
        raise bad_spec(f"{field} must be an IPv6 network with no host bits set") from None
    if network.prefixlen != 64:
        raise bad_spec(f"{field} must be a /64 (SLAAC needs 64-bit interface ids)")
    if network.is_multicast or network.is_link_local or network.is_loopback:
        raise bad_spec(f"{field} must be a unicast prefix")
    return network


def check_ipv6_address(value, field):
    if not isinstance(value, str):
        raise bad_spec(f"{field} must be an IPv6 address")
    try:
        return ipaddress.IPv6Address(value)
    except ValueError:
        raise bad_spec(f"{field} must be an IPv6 address") from None


def check_domain(value, field):
    if not isinstance(value, str) or not 0 < len(value) <= 253:
        raise bad_spec(f"{field} must be a domain name")
    labels = value.rstrip(".").split(".")
    if not all(DOMAIN_LABEL_RE.match(label) for label in labels):
        raise bad_spec(f"{field} must be a domain name of letters, digits and hyphens")
    return value.rstrip(".").lower()


def check_list(value, field, max_items):
    if not isinstance(value, list):
        raise bad_spec(f"{field} must be a list")
    if len(value) > max_items:
        raise bad_spec(f"{field} has more than {max_items} items")
    return value


def check_interface_name(value, field):
    return check_string(value, field, INTERFACE_NAME_RE, "an interface name of at most 15 letters, "
                        "digits and _.- characters")


SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

RBD_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

MAX_DISK_MIB = 64 * 1024 * 1024  # 64 TiB


def check_sha256(value, field="sha256"):
    return check_string(value, field, SHA256_RE, "64 lowercase hex digits")
