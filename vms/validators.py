import re

from django.core.exceptions import ValidationError

# A VM's name becomes its hostname: one DNS label.
VM_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def validate_vm_name(value: str) -> None:
    if not VM_NAME.match(value):
        raise ValidationError(
            "A VM name is a hostname: 1-63 lowercase letters, digits and '-', not starting or ending with '-'."
        )
