import re

from django.core.exceptions import ValidationError

# A VM's name becomes its hostname: one DNS label.
VM_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def validate_vm_name(value: str) -> None:
    if not VM_NAME.match(value):
        raise ValidationError(
            "A VM name is a hostname: 1-63 lowercase letters, digits and '-', not starting or ending with '-'."
        )


# cloud-init user-data, limited in UTF-8 bytes as the host limits it (a limit in characters let
# 2-byte text through to fail on the host).
MAX_USER_DATA_BYTES = 64 * 1024


def user_data_size_error(value: str) -> str | None:
    size = len(value.encode())
    if size > MAX_USER_DATA_BYTES:
        return f"User data is {size} bytes (UTF-8); the limit is {MAX_USER_DATA_BYTES} bytes."
    return None
