"""Sent inside the transaction of the change, so receivers (billing) write in that same transaction."""

from django.dispatch import Signal

vm_created = Signal()  # sender=VM, vm=
vm_resized = Signal()  # sender=VM, vm=, old_cores=, old_memory_mib=
vm_deleted = Signal()  # sender=VM, vm=
