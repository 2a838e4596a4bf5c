"""Thin Celery tasks of the VM app: the reconciler fans out one task per host."""

import contextlib

from celery import shared_task
from django.core.cache import cache

from agents import hostslots
from agents.models import Host
from agents.operations import wake_waiting
from networks.models import Firewall
from vms import firewall, reconciler
from vms.drain import DRAIN
from vms.migration import COLD, MIGRATE
from vms.workflows import CAPACITY_KINDS


@shared_task(name="vms.reconcile_all")
def reconcile_all() -> int:
    # Every host, draining and down ones too: their VMs still need watching, and a down host
    # that answers again is enabled.
    hosts = list(Host.objects.values_list("id", flat=True))
    for host_id in hosts:
        reconcile_host.delay(host_id)
    # Capacity can appear without any event we see (staff raise a host's cores in the admin); a
    # migration slot or a drain's wake-up may have been lost with a worker.
    wake_waiting([*CAPACITY_KINDS, MIGRATE, COLD, DRAIN])
    return len(hosts)


# A reconcile of a host (its inventory call may take up to a minute on a slow host) runs once at a
# time: beat's next tick does not stack another worker on that host.
RECONCILE_LOCK_S = 90


@shared_task(name="vms.reconcile_host", acks_late=True)
def reconcile_host(host_id: int) -> dict:
    host = Host.objects.filter(id=host_id).first()
    if host is None:
        return {}
    if hostslots.host_is_full(host_id):  # its slots are taken: no worker more for it until a later tick
        return {"host": host.name, "skipped": "the host is busy with operations"}
    key = f"uncloud:reconcile-host:{host_id}"
    try:
        if not cache.add(key, "running", timeout=RECONCILE_LOCK_S):
            return {"host": host.name, "skipped": "its previous reconcile is still running"}
    except Exception:  # no shared cache right now (Redis restarting): reconcile all the same
        key = None
    try:
        return reconciler.reconcile_host(host).__dict__
    finally:
        if key is not None:
            with contextlib.suppress(Exception):
                cache.delete(key)


@shared_task(name="vms.apply_firewall", bind=True, acks_late=True, max_retries=60)
def apply_firewall(self, vm_id: int) -> str:
    outcome = firewall.apply_firewall(vm_id)
    if outcome == firewall.LATER:
        if self.request.retries >= self.max_retries:
            Firewall.objects.filter(vm_id=vm_id).update(error="The host did not take the rules; retrying with the "
                                                              "next change or restart.")
            return firewall.FAILED
        raise self.retry(countdown=min(2 + self.request.retries, 15))
    return outcome
