"""Failing on purpose (LAB.md, second wave): a host cut from the control plane while alive, healed,
killed (every process of its namespace, links down) and revived; a host's files seen as it sees
them; the control plane's database gone for a while."""

import os
import signal
import subprocess
import time

import psycopg
from django.db import connection

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


def in_host_mounts(lab_host, argv: list[str]) -> str:
    """Run argv in the mount namespace of the host's sshd (`ip netns exec` gave it its own): what the
    host program sees of its files."""
    sshd_pid = lab_host.sshd_pid_path.read_text().split()[0]
    return subprocess.run(["nsenter", "-t", sshd_pid, "-m", *argv], check=True, capture_output=True,
                          text=True).stdout


def database_outage(seconds: float) -> int:
    """Our test database refuses connections for `seconds` and loses every open one (as in a
    restart): the machine's PostgreSQL serves other engineers' databases, so it is not restarted;
    the outage is this database's only. The test's own connection is cut too and comes back.
    Returns how many connections were cut."""
    name = connection.settings_dict["NAME"]
    admin = {key: value for key, value in connection.get_connection_params().items()
             if key in ("host", "port", "user", "password")}
    try:
        with psycopg.connect(dbname="postgres", autocommit=True, **admin) as control:
            control.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            try:
                (terminated,) = control.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                                "WHERE datname = %s", [name]).fetchone()
                time.sleep(seconds)
            finally:
                control.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    finally:
        connection.close()  # this process's connection was cut too: the next query opens a new one
    return terminated
