import re

from django.core.exceptions import ValidationError

# Names that reach hypervisors are kept to a boring alphabet; quoting still applies everywhere.
HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
LINUX_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def validate_host_name(value: str) -> None:
    if len(value) > 253 or not HOST_NAME.match(value):
        raise ValidationError("Use lowercase letters, digits, '-' and '.' (a DNS name).")


def validate_ifname(value: str) -> None:
    if not LINUX_IFNAME.match(value) or value in (".", ".."):
        raise ValidationError("An interface name is 1-15 characters of letters, digits, '_', '.', '-'.")


def validate_absolute_path(value: str) -> None:
    if not value.startswith("/") or "\x00" in value or "/../" in f"{value}/" or "\n" in value:
        raise ValidationError("Use an absolute path without '..'.")
    if len(value) > 57:
        # VM sockets live at <state_dir>/vms/<uuid>/qmp.sock and a unix socket path has 108 bytes.
        raise ValidationError("Keep the state directory at most 57 characters long.")
