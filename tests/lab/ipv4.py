"""IPv4 in the lab: an IPv4-only client namespace behind a host (a visitor on the IPv4 internet), and an
IPv4 link from the root namespace (where the control plane runs) to a host. Both are named after the
lab, so its teardown removes them with the rest."""

import subprocess
from dataclasses import dataclass

from tests.lab.hosts import NAME_PREFIX


def _ip(*argv):
    subprocess.run(["ip", *argv], check=True, capture_output=True, text=True)


@dataclass
class IPv4Client:
    netns: str
    address: str
    gateway: str  # the host's address on the client's link: where the client reaches the host

    def run(self, argv, check=True, input=None, timeout=60):
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], capture_output=True, text=True,
                              check=check, input=input, timeout=timeout)

    def remove(self):
        subprocess.run(["ip", "netns", "del", self.netns], check=False)


def add_ipv4_client(lab, host, *, address="203.0.113.2", gateway="203.0.113.1", name="v4client") -> IPv4Client:
    """A namespace with IPv6 off, linked to `host` (which gets `gateway`), default route via it."""
    netns = f"{NAME_PREFIX}{lab.lab_id}-{name}"
    _ip("netns", "add", netns)
    _ip("link", "add", "v4up", "netns", host.netns, "type", "veth", "peer", "name", "eth0", "netns", netns)
    _ip("-n", host.netns, "addr", "add", f"{gateway}/24", "dev", "v4up")
    _ip("-n", host.netns, "link", "set", "v4up", "up")
    for command in (["link", "set", "lo", "up"], ["addr", "add", f"{address}/24", "dev", "eth0"],
                    ["link", "set", "eth0", "up"], ["route", "add", "default", "via", gateway]):
        _ip("-n", netns, *command)
    subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], check=True)
    return IPv4Client(netns=netns, address=address, gateway=gateway)


def ipv4_from_root(lab, host, host_index: int) -> str:
    """An IPv4 /30 on the host's management link, unique per lab and host; the host's address. The
    control plane (root namespace) reaches the host's IPv4 services there."""
    lab_number = int(lab.lab_id, 16)
    prefix = f"10.{lab_number >> 8}.{lab_number & 0xff}"
    root_side, host_side = f"{prefix}.{host_index * 4 + 1}", f"{prefix}.{host_index * 4 + 2}"
    _ip("addr", "add", f"{root_side}/30", "dev", host.management_root_device)
    _ip("-n", host.netns, "addr", "add", f"{host_side}/30", "dev", "mgmt0")
    return host_side
