"""Thin Celery tasks of the images app: the sweep (see images/sweep.py), one task per host."""

import logging

from celery import shared_task

from agents.choices import HostStatus
from agents.hostagent import HostError
from agents.models import Host
from agents.transport import TransportError
from images import sweep

log = logging.getLogger(__name__)


@shared_task(name="images.sweep")
def sweep_all() -> dict:
    removed = sweep.sweep_uploads()
    hosts = list(Host.objects.exclude(status=HostStatus.DOWN).values_list("id", flat=True))
    for host_id in hosts:
        sweep_host.delay(host_id)
    return {"uploads_removed": removed, "hosts": len(hosts)}


@shared_task(name="images.sweep_host", acks_late=True)
def sweep_host(host_id: int) -> dict:
    host = Host.objects.filter(id=host_id).first()
    if host is None:
        return {}
    try:
        return sweep.sweep_base_images(host)
    except (TransportError, HostError) as error:
        # The next sweep tries again; a host that stays silent is the reconciler's business.
        log.warning("image sweep of host %s failed: %s", host.name, error)
        return {"host": host.name, "error": str(error)}
