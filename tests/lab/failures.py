"""A host failing on purpose (LAB.md, second wave): cut from the control plane while alive, healed,
killed (every process of its namespace, links down) and revived."""

import os
import signal

from tests.lab.hosts import MANAGEMENT_DEVICE, UNDERLAY_DEVICE, processes_in_netns

PARTITION_TABLE = "uncloud_ha_partition"


def cut_from_control_plane(lab_host) -> None:
    """Drop the control plane's SSH inside the host's namespace; its underlay stays up."""
    lab_host.run(["nft", "-f", "-"], input=f"""table inet {PARTITION_TABLE} {{
  chain input {{ type filter hook input priority -10; policy accept;
    iifname "{MANAGEMENT_DEVICE}" tcp dport 22 drop
  }}
}}
""")


def heal(lab_host) -> None:
    lab_host.run(["nft", "delete", "table", "inet", PARTITION_TABLE], check=False)


def kill_host(lab_host) -> None:
    """Every process of the host's namespace (sshd, guard, qemu, ...) SIGKILLed, then its links down."""
    for pid in processes_in_netns(lab_host.netns):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for device in (UNDERLAY_DEVICE, MANAGEMENT_DEVICE):
        lab_host.run(["ip", "link", "set", device, "down"])


def revive_host(lab_host) -> None:
    """Links up with their addresses again (a link going down drops its IPv6 addresses), then sshd."""
    for device, address in ((UNDERLAY_DEVICE, lab_host.underlay_address), (MANAGEMENT_DEVICE, lab_host.ssh_address)):
        lab_host.run(["ip", "-6", "addr", "replace", f"{address}/64", "dev", device, "nodad"])
        lab_host.run(["ip", "link", "set", device, "up"])
    lab_host.start_sshd()
