"""A VM's usage over the last hour or day, from the samples the control plane keeps (VMSample)."""

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from observability.models import VMSample
from observability.prometheus_source import PrometheusUnavailable, series_from_prometheus

log = logging.getLogger(__name__)

RANGES = {"1h": timedelta(hours=1), "1d": timedelta(days=1)}
# At most this many points per series: a day of one-minute samples is thinned to five-minute steps.
MAX_POINTS = 288
# name: (VMSample counter, unit of its rate)
SERIES = {
    "cpu": ("cpu_seconds", "cores"),
    "network_receive": ("network_receive_bytes", "bytes/s"),
    "network_transmit": ("network_transmit_bytes", "bytes/s"),
    "disk_read": ("disk_read_bytes", "bytes/s"),
    "disk_write": ("disk_write_bytes", "bytes/s"),
}
GRAPHS = {
    "cpu": ("CPU", ["cpu"]),
    "network": ("Network", ["network_receive", "network_transmit"]),
    "disk": ("Disk I/O", ["disk_read", "disk_write"]),
}


@dataclass
class Usage:
    range: str
    start: object
    end: object
    series: dict  # name -> {"unit": ..., "points": [[unix seconds, rate], ...]}
    memory_bytes: int | None
    source: str = "samples"


def _rate(previous, current, field, seconds):
    change = getattr(current, field) - getattr(previous, field)
    if change < 0:  # qemu restarted: its counters began again at zero
        change = getattr(current, field)
    return change / seconds


def vm_usage(vm_uuid, range_name: str) -> Usage:
    end = timezone.now()
    start = end - RANGES[range_name]
    if settings.UNCLOUD_METRICS_PROMETHEUS_URL:
        try:
            points, memory = series_from_prometheus(vm_uuid, range_name, start, end)
        except PrometheusUnavailable as error:
            log.warning("Prometheus did not answer (%s): graphs from the kept samples", error)
        else:
            series = {name: {"unit": unit, "points": points[name]} for name, (_, unit) in SERIES.items()}
            return Usage(range=range_name, start=start, end=end, series=series, memory_bytes=memory,
                         source="prometheus")
    samples = list(VMSample.objects.filter(vm_uuid=vm_uuid, taken__gte=start, taken__lte=end).order_by("taken"))
    stride = max(1, -(-len(samples) // MAX_POINTS))
    kept = samples[::stride]
    if samples and kept[-1] is not samples[-1]:
        kept.append(samples[-1])
    series = {name: {"unit": unit, "points": []} for name, (_, unit) in SERIES.items()}
    for previous, current in zip(kept, kept[1:], strict=False):
        seconds = (current.taken - previous.taken).total_seconds()
        if seconds <= 0:
            continue
        for name, (field, _) in SERIES.items():
            series[name]["points"].append([round(current.taken.timestamp(), 3),
                                           round(_rate(previous, current, field, seconds), 6)])
    return Usage(range=range_name, start=start, end=end, series=series,
                 memory_bytes=samples[-1].memory_bytes if samples else None)
