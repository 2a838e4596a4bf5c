"""Host status transitions: the only code that changes Host.status.

Each action is a conditional UPDATE from the statuses it may leave (two writers cannot both win),
plus an audit row in the same transaction; it returns whether it changed anything. When a host can
take VMs again, `host_available` is sent after the commit (vms wakes the VMs waiting for room).
Staff use enable/disable/draining (the admin; vms/drain.py's maintenance drain marks the host
draining, then in maintenance once empty); the reconciler and the host check use down/up.
"""

from django.db import transaction

from accounts import audit
from agents.choices import HostStatus
from agents.models import Host
from agents.signals import host_available


def _transition(actor, host: Host, action: str, new: str, *, leaving: list[str], **details) -> bool:
    old = Host.objects.filter(pk=host.pk).values_list("status", flat=True).first()
    if old not in leaving or not Host.objects.filter(pk=host.pk, status=old).update(status=new):
        return False
    host.status = new
    audit.record(actor, action, target=host, old=old, new=new, **details)
    if new == HostStatus.ENABLED:
        transaction.on_commit(lambda: host_available.send(sender=Host, host=host))
    return True


@transaction.atomic
def do_enable_host(actor, host: Host) -> bool:
    """Staff put a draining, disabled or maintained host back into service."""
    return _transition(actor, host, "host.enable", HostStatus.ENABLED,
                       leaving=[HostStatus.DRAINING, HostStatus.DOWN, HostStatus.MAINTENANCE])


@transaction.atomic
def do_mark_host_draining(actor, host: Host) -> bool:
    """No new VMs land on the host; the running ones stay (a maintenance drain moves them)."""
    return _transition(actor, host, "host.drain", HostStatus.DRAINING,
                       leaving=[HostStatus.ENABLED, HostStatus.DOWN])


@transaction.atomic
def do_mark_host_maintenance(actor, host: Host) -> bool:
    """A drained host is empty: staff may work on it; no VMs until it is enabled."""
    return _transition(actor, host, "host.maintenance", HostStatus.MAINTENANCE, leaving=[HostStatus.DRAINING])


@transaction.atomic
def do_disable_host(actor, host: Host) -> bool:
    """Staff mark the host down: no new VMs. (It comes back by itself when it answers the
    reconciler again, as before: `down` has one meaning for staff and the reconciler.)"""
    return _transition(actor, host, "host.disable", HostStatus.DOWN,
                       leaving=[HostStatus.ENABLED, HostStatus.DRAINING])


@transaction.atomic
def do_mark_host_down(host: Host, error: str) -> bool:
    """The control plane found an enabled host silent past the heartbeat timeout."""
    return _transition(None, host, "host.down", HostStatus.DOWN, leaving=[HostStatus.ENABLED], error=error[:500])


@transaction.atomic
def do_mark_host_up(host: Host) -> bool:
    """A host that was down answered again."""
    return _transition(None, host, "host.up", HostStatus.ENABLED, leaving=[HostStatus.DOWN])
