"""Test hosts for the hostside program.

`hosts` gives two hypervisors sharing an IPv6 underlay that carries multicast. It uses the project
lab (tests/lab, load it with `-p tests.lab.fixtures`) when that plugin is loaded, and otherwise
builds two namespaces of its own joined by a veth pair called ul0 on both sides. `lone_host` is
one bare namespace for tests that must not get far (bad specs, missing binaries).
Everything is torn down even when a test fails: processes by the pid files and command lines
under the hosts' state dirs, then the namespaces, then the state dirs.
"""
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from command_table import commands  # noqa: F401  (the fixture of the unit tests)
from hostside_testlib import process_gone

sys.path.insert(0, str(Path(__file__).resolve().parent))


@dataclass
class NamespaceHost:
    """The slice of tests.lab.hosts.LabHost these tests use."""
    netns: str
    state_dir: Path
    underlay_device: str = "ul0"

    def run(self, argv, input=None, timeout=60.0, check=True):
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], input=input,
                              capture_output=True, text=True, timeout=timeout, check=check)


def processes_naming(directory):
    marker = f"{directory}/"
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry))
    return pids


def stop_processes_of(directory):
    """qemu and radvd started below directory (our own unique temp dir), found by command line."""
    for pid in processes_naming(directory):
        if pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
            not process_gone(pid) for pid in processes_naming(directory)):
        time.sleep(0.05)


def make_namespace_hosts(count):
    token = secrets.token_hex(3)
    top = Path(tempfile.mkdtemp(prefix=f"uchs{token}-", dir="/tmp"))
    hosts = []
    for index in range(1, count + 1):
        state_dir = top / f"hv{index}"
        state_dir.mkdir()
        host = NamespaceHost(netns=f"uchs{token}h{index}", state_dir=state_dir)
        subprocess.run(["ip", "netns", "add", host.netns], check=True)
        subprocess.run(["ip", "-n", host.netns, "link", "set", "lo", "up"], check=True)
        hosts.append(host)
    if count == 2:
        first, second = hosts
        subprocess.run(["ip", "link", "add", "ul0", "netns", first.netns, "type", "veth", "peer",
                        "name", "ul0", "netns", second.netns], check=True)
        for index, host in enumerate(hosts, start=1):
            subprocess.run(["ip", "-n", host.netns, "-6", "addr", "add", f"fd00:1::{index}/64",
                            "dev", "ul0", "nodad"], check=True)
            subprocess.run(["ip", "-n", host.netns, "link", "set", "ul0", "up"], check=True)
    return top, hosts


def remove_namespace_hosts(top, hosts):
    stop_processes_of(top)
    for host in hosts:
        subprocess.run(["ip", "netns", "del", host.netns], check=False)
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def hosts(request):
    try:
        lab_factory = request.getfixturevalue("lab_factory")
    except pytest.FixtureLookupError:
        lab_factory = None
    if lab_factory is not None:
        lab = lab_factory(n_hosts=2)
        yield lab.hosts
        for host in lab.hosts:
            stop_processes_of(host.state_dir)  # the lab tears down the rest
        return
    top, made = make_namespace_hosts(2)
    try:
        yield made
    finally:
        remove_namespace_hosts(top, made)


@pytest.fixture(scope="module")
def lone_host():
    top, made = make_namespace_hosts(1)
    try:
        yield made[0]
    finally:
        remove_namespace_hosts(top, made)
