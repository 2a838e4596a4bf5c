"""Samples for the customers' graphs: each host's exporter read every UNCLOUD_METRICS_SAMPLE_INTERVAL s,
one VMSample row per VM the database places there, kept UNCLOUD_METRICS_RETENTION_HOURS."""

import logging
import urllib.error
import uuid
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from agents.choices import HostLiveness, HostStatus
from agents.hostagent import HostError
from agents.transport import TransportError
from observability.exporters import ensure_exporter, exporter_address, read_exporter, vm_counters
from observability.models import VMSample
from vms.choices import VMStatus
from vms.models import VM

log = logging.getLogger(__name__)


def hosts_to_sample(hosts):
    return [host for host in hosts if host.status != HostStatus.MAINTENANCE and host.liveness == HostLiveness.ALIVE
            and exporter_address(host) is not None]


def sample_host(host) -> int:
    """Read the host's exporter and store a sample per VM; start the exporter when it does not answer
    (the next round samples it). Returns the number of samples stored."""
    try:
        text = read_exporter(host)
    except (OSError, urllib.error.URLError) as error:
        log.info("host %s: exporter did not answer (%s); starting it", host.name, error)
        try:
            ensure_exporter(host)
        except (TransportError, HostError) as failure:
            log.warning("host %s: could not start its exporter: %s", host.name, failure)
        return 0
    counters = {vm: values for vm, values in vm_counters(text).items() if _is_uuid(vm)}
    placed = {str(uuid) for uuid in VM.objects.filter(host=host, uuid__in=list(counters))
              .exclude(status=VMStatus.DELETED).values_list("uuid", flat=True)}
    taken = timezone.now()
    VMSample.objects.bulk_create([VMSample(vm_uuid=vm, taken=taken, **{field: int(value) if field != "cpu_seconds"
                                                                        else value for field, value in values.items()})
                                  for vm, values in counters.items() if vm in placed])
    return len(placed)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def prune_samples() -> int:
    cutoff = timezone.now() - timedelta(hours=settings.UNCLOUD_METRICS_RETENTION_HOURS)
    deleted, _ = VMSample.objects.filter(taken__lt=cutoff).delete()
    return deleted
