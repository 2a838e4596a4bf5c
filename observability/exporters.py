"""The hosts' exporters as the control plane sees them: where each listens (its management address,
UNCLOUD_HOST_EXPORTER_PORT), starting one that does not answer (or wants another token: it is
started again with UNCLOUD_METRICS_TOKEN), and reading a VM's counters from it."""

import ipaddress
import logging
import urllib.request
from collections import defaultdict

from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from agents.choices import HostTransport
from agents.hosts import agent_for

log = logging.getLogger(__name__)

# Exporter families (agents/hostside/uncloud_hostside/exporter.py) -> VMSample fields; summed over a
# VM's taps and disks.
SAMPLE_FIELDS = {
    "uncloud_vm_cpu_seconds": "cpu_seconds",
    "uncloud_vm_memory_rss_bytes": "memory_bytes",
    "uncloud_vm_network_receive_bytes": "network_receive_bytes",
    "uncloud_vm_network_transmit_bytes": "network_transmit_bytes",
    "uncloud_vm_disk_read_bytes": "disk_read_bytes",
    "uncloud_vm_disk_write_bytes": "disk_write_bytes",
}


def exporter_address(host) -> str | None:
    """The address the host's exporter binds: its management (SSH) address, loopback for the local
    host. A host named by DNS is resolved here, once per use."""
    if not settings.UNCLOUD_HOST_EXPORTER_PORT:
        return None
    if host.transport == HostTransport.LOCAL:
        return "127.0.0.1"
    address = host.ssh_address
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        import socket

        try:
            return socket.getaddrinfo(address, None)[0][4][0]
        except OSError:
            return None


def exporter_target(host) -> str | None:
    """host:port as Prometheus writes a target (IPv6 in brackets)."""
    address = exporter_address(host)
    if address is None:
        return None
    shown = f"[{address}]" if ":" in address else address
    return f"{shown}:{settings.UNCLOUD_HOST_EXPORTER_PORT}"


def ensure_exporter(host) -> dict:
    """Start the host's exporter unless it runs (host verb exporter-up: idempotent)."""
    return agent_for(host).call("exporter-up", {"state_dir": host.state_dir, "listen": exporter_address(host),
                                                "port": settings.UNCLOUD_HOST_EXPORTER_PORT,
                                                "token": settings.UNCLOUD_METRICS_TOKEN})


def read_exporter(host, timeout: float = 5.0) -> str:
    """The exporter's answer; it wants the scraper token (HTTP 401 raises, like a silent exporter)."""
    request = urllib.request.Request(f"http://{exporter_target(host)}/metrics")
    if settings.UNCLOUD_METRICS_TOKEN:
        request.add_header("Authorization", f"Bearer {settings.UNCLOUD_METRICS_TOKEN}")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return response.read().decode()


def vm_counters(text: str) -> dict[str, dict[str, float]]:
    """{vm uuid: {VMSample field: value}} from an exporter's answer."""
    counters: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(SAMPLE_FIELDS.values(), 0.0))
    for family in text_string_to_metric_families(text):
        field = SAMPLE_FIELDS.get(family.name)
        if field is None:
            continue
        for sample in family.samples:
            if sample.name.endswith(("_created",)):
                continue
            vm = sample.labels.get("vm")
            if vm:
                counters[vm][field] += sample.value
    return dict(counters)
