"""A running step keeps its operation's lease: a heartbeat thread renews it while the step runs.

Leases can then be short (UNCLOUD_OPERATION_LEASE_SECONDS, 15 s by default): a worker killed
mid-step stops renewing, its lease runs out within seconds, and the resumer (beat) hands the
operation to another worker. A step that merely takes long (a migration, a big image copy)
renews as long as its worker lives.

The thread touches the database only when the step outlives one renewal interval, and then on a
connection of its own that it closes after each renewal (a PostgreSQL restart costs it one
missed renewal, not a broken connection; short steps cost no connection at all).
"""

import logging
import threading
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connections
from django.utils import timezone

from agents.models import Operation

log = logging.getLogger(__name__)

# Renewals per lease: a lease survives this many missed renewals minus one (a database restart).
RENEWALS_PER_LEASE = 5


def renew_interval_s() -> float:
    return max(0.2, settings.UNCLOUD_OPERATION_LEASE_SECONDS / RENEWALS_PER_LEASE)


def renew(operation_id: int, owner: str) -> bool:
    """Push the lease's end one lease from now, if `owner` still holds it."""
    until = timezone.now() + timedelta(seconds=settings.UNCLOUD_OPERATION_LEASE_SECONDS)
    return bool(Operation.objects.filter(id=operation_id, lease_owner=owner).update(lease_until=until))


def _keep_renewing(operation_id: int, owner: str, done: threading.Event) -> None:
    interval = renew_interval_s()
    while not done.wait(interval):
        try:
            if not renew(operation_id, owner):
                log.warning("operation %s: lease lost while its step runs (owner %s)", operation_id, owner)
                return
        except DatabaseError as error:
            log.warning("operation %s: lease not renewed (%s); trying again", operation_id, error)
        finally:
            connections.close_all()  # this thread's connections only


@contextmanager
def lease_renewed(operation: Operation):
    """Run the body (one step) while a heartbeat thread renews the operation's lease."""
    done = threading.Event()
    thread = threading.Thread(target=_keep_renewing, args=(operation.id, operation.lease_owner, done),
                              name=f"lease-{operation.id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)  # a renewal stuck on a dead database must not hold the worker
