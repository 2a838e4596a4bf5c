"""Storage backends behind one interface: each has ensure_disk, delete_disk, snapshot_disk,
delete_snapshot, fetch_snapshot and plug_source, and says whether its disk verbs can ride in a VM's
batch. images/hostwork.py picks one per disk (or snapshot) by its `storage` field and never names a
backend's module; a new backend is a class here."""

from images.choices import StorageBackend
from images.localdisks import LocalDisks
from images.rbd import RbdDisks

BACKENDS = {StorageBackend.LOCAL: LocalDisks(), StorageBackend.RBD: RbdDisks()}


def backend_for(storage: str):
    return BACKENDS[storage]
