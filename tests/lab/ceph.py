"""A real single-node Ceph cluster for tests: one mon, one memstore OSD, pool `rbd`.

Everything runs inside a network namespace of its own (mon on 127.0.0.1:3300 there), so several
clusters never collide and nothing listens outside. The namespace doubles as a hypervisor that
reaches the cluster: run the host-side program and qemu inside it (`CephCluster.run`).
Every path (keyrings, data, logs, sockets, pid files) is under the cluster's directory; the
hypervisor's state dir is `<directory>/hv` with the config in `hv/ceph/ceph.conf`.

    pytest fixture `ceph_cluster` (session): skips, with the reason printed, only when Ceph is not
    installed (Debian: ceph-mon ceph-osd ceph-common) or namespaces cannot be made.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

BINARIES = ("ceph-mon", "ceph-osd", "ceph", "rbd", "ceph-authtool", "monmaptool")
POOL = "rbd"
HEALTH_TIMEOUT_S = 90


def unavailable_reason() -> str | None:
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        return f"Ceph is not installed (missing {', '.join(missing)}; apt-get install ceph-mon ceph-osd ceph-common)"
    if os.geteuid() != 0:
        return "Ceph lab needs root (network namespaces)"
    return None


@dataclass
class CephCluster:
    directory: Path
    netns: str
    fsid: str = ""
    # Reachable from a lab's hosts: (the lab's switch namespace, this cluster's underlay address).
    # Then the mon and OSD listen on that address and each host is a Ceph client with its own
    # underlay address (what a storage fence blocklists); otherwise everything is on 127.0.0.1.
    underlay: tuple[str, str] | None = None

    @property
    def state_dir(self) -> Path:
        return self.directory / "hv"

    @property
    def conf(self) -> Path:
        return self.state_dir / "ceph" / "ceph.conf"

    def run(self, argv, input=None, timeout=120.0, check=True) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], input=input, capture_output=True,
                              text=True, timeout=timeout, check=check)

    def ceph(self, *args, timeout=60.0) -> str:
        return self.run(["ceph", "--conf", str(self.conf), *args], timeout=timeout).stdout

    def rbd(self, *args, timeout=60.0) -> str:
        return self.run(["rbd", "--conf", str(self.conf), *args], timeout=timeout).stdout

    def rbd_images(self, pool: str = POOL) -> list[str]:
        return sorted(json.loads(self.rbd("ls", "--format", "json", pool) or "[]"))

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def mon_address(self) -> str:
        return f"[{self.underlay[1]}]" if self.underlay else "127.0.0.1"

    def _attach_to_underlay(self) -> None:
        switch_netns, address = self.underlay
        port = f"ceph{self.netns[-6:]}"[:15]
        subprocess.run(["ip", "link", "add", "ceph0", "netns", self.netns, "type", "veth", "peer", "name", port,
                        "netns", switch_netns], check=True)
        subprocess.run(["ip", "-n", switch_netns, "link", "set", port, "master", "switch", "up"], check=True)
        subprocess.run(["ip", "-n", self.netns, "-6", "addr", "add", f"{address}/64", "dev", "ceph0", "nodad"],
                       check=True)
        subprocess.run(["ip", "-n", self.netns, "link", "set", "ceph0", "up"], check=True)

    def client_conf(self) -> str:
        """A ceph.conf for clients elsewhere (the lab's hosts): where the mon is and the admin key."""
        return (f"[global]\nfsid = {self.fsid}\nmon host = v2:{self.mon_address}:3300/0\n"
                f"ms bind ipv6 = {'true' if self.underlay else 'false'}\n"
                f"[client]\nkeyring = {self.conf.parent / 'client.admin.keyring'}\n")

    def up(self) -> CephCluster:
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True)
        if self.underlay:
            self._attach_to_underlay()
        network = "fd00:1::/64" if self.underlay else "127.0.0.0/8"
        ipv6 = "ms bind ipv6 = true\nms bind ipv4 = false\n" if self.underlay else ""
        ceph_dir = self.conf.parent
        for sub in (ceph_dir, self.directory / "run", self.directory / "log", self.directory / "mon",
                    self.directory / "osd"):
            sub.mkdir(parents=True, exist_ok=True)
        self.fsid = str(uuid.uuid4())
        work = self.directory
        self.conf.write_text(f"""[global]
fsid = {self.fsid}
mon host = v2:{self.mon_address}:3300/0
mon initial members = a
public network = {network}
{ipv6}auth cluster required = cephx
auth service required = cephx
auth client required = cephx
run dir = {work}/run
admin socket = {work}/run/$name.asok
pid file = {work}/run/$name.pid
log file = {work}/log/$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
mon warn on pool no redundancy = false
[mon]
mon data = {work}/mon/$cluster-$id
keyring = {work}/mon/keyring
[osd]
osd data = {work}/osd/$cluster-$id
keyring = {work}/osd/$cluster-$id/keyring
osd objectstore = memstore
memstore device bytes = 1073741824
osd max object name len = 256
osd max object namespace len = 64
[client]
keyring = {ceph_dir}/client.admin.keyring
""")
        admin_keyring = ceph_dir / "client.admin.keyring"
        mon_keyring = work / "mon" / "keyring"
        _run(["ceph-authtool", "--create-keyring", str(mon_keyring), "--gen-key", "-n", "mon.", "--cap", "mon",
              "allow *"])
        _run(["ceph-authtool", "--create-keyring", str(admin_keyring), "--gen-key", "-n", "client.admin",
              "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *"])
        _run(["ceph-authtool", str(mon_keyring), "--import-keyring", str(admin_keyring)])
        monmap = work / "monmap"
        _run(["monmaptool", "--create", "--addv", "a", f"[v2:{self.mon_address}:3300]", "--fsid", self.fsid,
              str(monmap)])
        self.run(["ceph-mon", "--conf", str(self.conf), "--mkfs", "-i", "a", "--monmap", str(monmap),
                  "--keyring", str(mon_keyring)])
        self.run(["ceph-mon", "--conf", str(self.conf), "-i", "a"])
        osd_uuid = str(uuid.uuid4())
        osd_id = self.ceph("osd", "new", osd_uuid).strip()
        osd_dir = work / "osd" / f"ceph-{osd_id}"
        osd_dir.mkdir(parents=True, exist_ok=True)
        # The OSD's key first: mkfs already asks the mon for its configuration.
        _run(["ceph-authtool", "--create-keyring", str(osd_dir / "keyring"), "--gen-key", "-n", f"osd.{osd_id}"])
        self.ceph("auth", "add", f"osd.{osd_id}", "osd", "allow *", "mon", "allow profile osd", "-i",
                  str(osd_dir / "keyring"))
        self.run(["ceph-osd", "--conf", str(self.conf), "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid])
        self.run(["ceph-osd", "--conf", str(self.conf), "-i", osd_id])
        self._wait_for_osd_up()
        self.ceph("osd", "pool", "create", POOL, "8")
        self.rbd("pool", "init", POOL)
        return self

    def _wait_for_osd_up(self) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while True:
            status = json.loads(self.ceph("osd", "stat", "--format", "json"))
            if status.get("num_up_osds", 0) >= 1:
                return
            if time.monotonic() > deadline:
                log = (self.directory / "log").glob("*.log")
                tails = {path.name: path.read_text(errors="replace")[-1500:] for path in log}
                raise RuntimeError(f"the OSD did not come up within {HEALTH_TIMEOUT_S} s: {status}\n{tails}")
            time.sleep(0.5)

    def down(self) -> None:
        for pid_file in (self.directory / "run").glob("*.pid"):
            try:
                pid = int(pid_file.read_text().strip())
            except (ValueError, OSError):
                continue
            _kill(pid)
        for pid in _processes_naming(str(self.directory) + "/"):
            _kill(pid)
        subprocess.run(["ip", "netns", "del", self.netns], check=False, capture_output=True)
        shutil.rmtree(self.directory, ignore_errors=True)


def _run(argv):
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)


def _processes_naming(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline.replace("\0", " "):
                pids.append(int(entry))
    return pids


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def ceph_cluster():
    reason = unavailable_reason()
    if reason:
        print(f"tests.lab.ceph: Ceph tests skipped: {reason}", file=sys.stderr)
        pytest.skip(f"Ceph unavailable: {reason}")
    token = secrets.token_hex(3)
    # Short: the hypervisor state dir below it must stay within the host-side program's limit.
    directory = Path(f"/tmp/ucceph{token}")
    directory.mkdir()
    cluster = CephCluster(directory=directory, netns=f"ucceph{token}")
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()


def ceph_on_underlay(lab, address: str = "fd00:1::ce") -> CephCluster:
    """A cluster of its own that the lab's hosts reach over their underlay (call .down() after)."""
    token = secrets.token_hex(3)
    directory = Path(f"/tmp/ucceph{token}")
    directory.mkdir()
    cluster = CephCluster(directory=directory, netns=f"ucceph{token}", underlay=(lab.switch_netns, address))
    try:
        return cluster.up()
    except BaseException:
        cluster.down()
        raise


@contextmanager
def ceph_for_lab(lab):
    """(cluster, client ceph.conf) for the lab's hosts, torn down after. The host-side program takes
    a ceph.conf only below its state dir or /etc/ceph: lab hosts have separate state dirs, so the
    file goes to /etc/ceph under a name of this cluster's own, removed afterwards."""
    cluster = ceph_on_underlay(lab)
    conf = Path(f"/etc/ceph/uncloud-lab-{cluster.netns}.conf")
    try:
        conf.parent.mkdir(exist_ok=True)
        conf.write_text(cluster.client_conf())
        yield cluster, conf
    finally:
        conf.unlink(missing_ok=True)
        cluster.down()
