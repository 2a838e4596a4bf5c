"""Test hosts for the hostside program, from the project lab (tests/lab; the root conftest loads
its fixtures, `-p tests.lab.fixtures` does when these run alone).

`hosts` gives two hypervisors sharing an IPv6 underlay that carries multicast, `lone_host` one
host for tests that must not get far (bad specs, missing binaries). Everything is torn down even
when a test fails: processes by the command lines under the hosts' state dirs, then the lab.
The unit tests (test_unit_*.py) use no host at all: `commands` answers for the host's programs.
"""
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from command_table import commands  # noqa: F401  (the fixture of the unit tests)
from hostside_testlib import process_gone

from tests.lab import Lab

sys.path.insert(0, str(Path(__file__).resolve().parent))


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


@pytest.fixture
def hosts(lab_factory):
    """Two hypervisors of the project lab (tests/lab) sharing an underlay that carries multicast."""
    lab = lab_factory(n_hosts=2)
    yield lab.hosts
    for host in lab.hosts:
        stop_processes_of(host.state_dir)  # the lab tears down the rest


@pytest.fixture(scope="module")
def lone_host(_lab_cleaned_up, tmp_path_factory):
    """One lab host for tests that must not get far (bad specs, missing binaries)."""
    with Lab(tmp_path_factory.mktemp("lab"), n_hosts=1) as lab:
        yield lab.hosts[0]
        stop_processes_of(lab.hosts[0].state_dir)
