"""A VM's usage from Prometheus (UNCLOUD_METRICS_PROMETHEUS_URL), when a site runs one that scrapes
the host exporters: the same series as the kept samples, at Prometheus' resolution."""

import json
import logging
import urllib.parse
import urllib.request

from django.conf import settings

log = logging.getLogger(__name__)

# range -> (step seconds, rate window): a window of several scrapes keeps a missed scrape from
# breaking the line.
RESOLUTION = {"1h": (30, "2m"), "1d": (300, "10m")}
# Series name -> the exporter's counter (summed over a VM's ports and disks).
COUNTERS = {
    "cpu": "uncloud_vm_cpu_seconds_total",
    "network_receive": "uncloud_vm_network_receive_bytes_total",
    "network_transmit": "uncloud_vm_network_transmit_bytes_total",
    "disk_read": "uncloud_vm_disk_read_bytes_total",
    "disk_write": "uncloud_vm_disk_write_bytes_total",
}


class PrometheusUnavailable(Exception):
    pass


def _get(path: str, params: dict):
    url = settings.UNCLOUD_METRICS_PROMETHEUS_URL.rstrip("/") + path + "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (staff's own setting)
            answer = json.load(response)
    except (OSError, ValueError) as error:
        raise PrometheusUnavailable(str(error)) from None
    if answer.get("status") != "success":
        raise PrometheusUnavailable(answer.get("error", "no success"))
    return answer["data"]["result"]


def series_from_prometheus(vm_uuid, range_name: str, start, end) -> tuple[dict, int | None]:
    """({name: [[unix seconds, rate], ...]}, resident bytes or None). The VM's UUID is the only
    thing put into the queries, and it is a UUID."""
    step, window = RESOLUTION[range_name]
    selector = f'{{vm="{vm_uuid}"}}'
    series = {}
    for name, counter in COUNTERS.items():
        result = _get("/api/v1/query_range", {
            "query": f"sum(rate({counter}{selector}[{window}]))", "start": start.timestamp(),
            "end": end.timestamp(), "step": step})
        series[name] = [[float(t), float(v)] for t, v in result[0]["values"]] if result else []
    memory = _get("/api/v1/query", {"query": f"sum(uncloud_vm_memory_rss_bytes{selector})"})
    return series, int(float(memory[0]["value"][1])) if memory else None
