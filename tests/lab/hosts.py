"""Real test hypervisors built from network namespaces on this one machine.

One lab (id = 4 hex digits, so several labs can exist at once):

    root namespace                    uclab<id>-hv<i>                    uclab<id>-sw
    uclab<id>m<i>  fd00:ff:<id>:<i>::1 ── mgmt0 fd00:ff:<id>:<i>::2
                                          sshd on [mgmt0 address]:22 and [ul0 address]:22
                                          ul0   fd00:1::<i>/64  ───────── hv<i> ─ bridge "switch"

The underlay switch lives in its own namespace, so the root namespace only ever sees the management
veths. Guest namespaces (add_guest_namespace) are named uclab<id>-g<k>.

Before a lab creates anything it registers itself in /run/uclab/<id>.json with its owner's pid and
start time: cleanup_stale() removes labs whose owner is dead, and everything of a lab is found by
its name prefix, so a half-built lab is removed as completely as a finished one.
"""
from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

NAME_PREFIX = "uclab"
REGISTRY_DIR = Path("/run/uclab")
NETNS_DIR = Path("/run/netns")
SSHD = "/usr/sbin/sshd"  # sshd re-executes itself and insists on an absolute path

UNDERLAY_DEVICE = "ul0"
UNDERLAY_PREFIX = "fd00:1::/64"
MANAGEMENT_DEVICE = "mgmt0"
SWITCH_BRIDGE = "switch"
SSH_PORT = 22

# The kernel treats a veth's carrier change as urgent only when its ifindex differs from its peer's;
# otherwise the link stays operationally DOWN until linkwatch's next batch, up to 1 s later. Two
# fresh namespaces both number their first veth 2, so the host/guest end gets this index instead
# (no namespace here numbers that high by itself, and in a host it is taken, so ports never get it).
_DISTINCT_IFINDEX = 1000

_LAB_ID = re.compile(r"^[0-9a-f]{4}$")
_LAB_NAME = re.compile(rf"^{NAME_PREFIX}([0-9a-f]{{4}})(?:-|m\d+$)")


class LabCommandError(subprocess.CalledProcessError):
    """CalledProcessError whose message carries stderr, so a failing lab command explains itself."""

    def __str__(self):
        stderr = self.stderr.decode(errors="replace") if isinstance(self.stderr, bytes) else self.stderr
        return f"{super().__str__()}\nstderr: {(stderr or '').strip()}"


def _run(argv, input=None, timeout=60.0, check=True) -> subprocess.CompletedProcess:
    # Text unless the caller hands us bytes: most callers want to read the output.
    result = subprocess.run(
        argv, input=input, capture_output=True, timeout=timeout, text=not isinstance(input, bytes)
    )
    if check and result.returncode != 0:
        raise LabCommandError(result.returncode, argv, result.stdout, result.stderr)
    return result


def _ip_batch(lines: list[str], netns: str | None = None) -> None:
    # One `ip -batch` per namespace instead of one process per command keeps up() fast.
    namespace_option = ["-n", netns] if netns else []
    _run(["ip", *namespace_option, "-batch", "-"], input="\n".join(lines) + "\n")


# --- processes and namespaces -------------------------------------------------------------------

def _process_start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may itself contain spaces
    if fields[0] == "Z":
        return None  # a zombie is dead for our purposes
    return int(fields[19])


def _process_alive(pid: int, start_time: int | None = None) -> bool:
    current = _process_start_time(pid)
    return current is not None and (start_time is None or current == start_time)


def _netns_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def processes_in_netns(netns: str) -> list[int]:
    """Pids of the processes inside a named namespace (what `ip netns pids` does, without a fork)."""
    identity = _netns_identity(str(NETNS_DIR / netns))
    if identity is None:
        return []
    return [
        int(entry) for entry in os.listdir("/proc")
        if entry.isdigit() and _netns_identity(f"/proc/{entry}/ns/net") == identity
    ]


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _kill_and_wait(pids, grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL whatever is still there after `grace` seconds."""
    pids = {pid for pid in pids if pid != os.getpid()}
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            pids = {pid for pid in pids if _process_alive(pid)}
            if pids:
                time.sleep(0.02)
        if not pids:
            return


def _pidfile_processes(directories, netns_identities) -> set[int]:
    """Daemons whose pid files live under `directories` (qemu, radvd, sshd started by tests).

    A pid file can outlive its process and the pid can be reused, so a pid counts only when the
    process is inside one of our namespaces or its command line names one of our directories.
    """
    found = set()
    for directory in directories:
        if directory is None or not Path(directory).is_dir():
            continue
        for pidfile in Path(directory).rglob("*.pid"):
            try:
                pid = int(pidfile.read_text().split()[0])
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ValueError, IndexError):
                continue
            in_our_netns = _netns_identity(f"/proc/{pid}/ns/net") in netns_identities
            if in_our_netns or any(str(d) in cmdline for d in directories if d):
                found.add(pid)
    return found


def _lab_names(lab_id: str) -> tuple[list[str], list[str]]:
    """(namespaces, root-namespace interfaces) that belong to lab `lab_id`, found by name."""
    namespaces = sorted(n for n in _listdir(NETNS_DIR) if n.startswith(f"{NAME_PREFIX}{lab_id}-"))
    root_links = sorted(
        n for n in _listdir(Path("/sys/class/net")) if re.fullmatch(rf"{NAME_PREFIX}{lab_id}m\d+", n)
    )
    return namespaces, root_links


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _teardown(lab_id: str, workdir: Path | None) -> list[str]:
    """Remove every daemon, interface and namespace of one lab. Returns what it removed."""
    namespaces, root_links = _lab_names(lab_id)
    identities = {_netns_identity(str(NETNS_DIR / ns)) for ns in namespaces} - {None}
    victims = set()
    for ns in namespaces:
        victims.update(processes_in_netns(ns))
    victims |= _pidfile_processes([workdir], identities)
    # A namespace with processes left in it survives `ip netns del` (anonymously, with all its
    # interfaces), so the processes go first.
    _kill_and_wait(victims)
    # Namespace destruction is asynchronous: the root end of a management veth lingers for a while
    # after `ip netns del`, so delete those veths explicitly (which takes both ends).
    for link in root_links:
        _run(["ip", "link", "del", link], check=False)
    for ns in namespaces:
        _run(["ip", "netns", "del", ns], check=False)
    left = [ns for ns in namespaces if (NETNS_DIR / ns).exists()]
    if left:
        print(f"tests.lab: could not delete namespaces {left}", file=sys.stderr)
    try:
        (REGISTRY_DIR / f"{lab_id}.json").unlink()
    except FileNotFoundError:
        pass
    return namespaces + root_links + [f"pid {pid}" for pid in sorted(victims)]


# --- public API ---------------------------------------------------------------------------------

@dataclass
class LabHost:
    """One test hypervisor: a network namespace with an underlay veth and its own sshd."""

    name: str
    netns: str
    ssh_address: str
    host_key: str
    client_key_path: Path
    underlay_address: str
    state_dir: Path
    files_dir: Path  # sshd config, keys, pid file, log (not the host's state)
    management_root_device: str  # the root-namespace end of the management veth
    ssh_port: int = SSH_PORT
    ssh_user: str = "root"
    underlay_device: str = UNDERLAY_DEVICE
    underlay_prefix: str = UNDERLAY_PREFIX

    @property
    def sshd_config_path(self) -> Path:
        return self.files_dir / "sshd_config"

    @property
    def sshd_pid_path(self) -> Path:
        return self.files_dir / "sshd.pid"

    @property
    def known_hosts_path(self) -> Path:
        return self.files_dir / "known_hosts"

    def run(self, argv, input=None, timeout=60.0, check=True) -> subprocess.CompletedProcess:
        """Run argv inside this host's namespace. Output is text unless `input` is bytes."""
        return _run(["ip", "netns", "exec", self.netns, *argv], input=input, timeout=timeout, check=check)

    def ssh_argv(self, argv: list[str]) -> list[str]:
        """An `ssh` command line that runs argv on this host with its host key pinned."""
        return [
            "ssh", "-i", str(self.client_key_path), "-p", str(self.ssh_port),
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts_path}",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
            f"{self.ssh_user}@{self.ssh_address}", "--", *argv,
        ]

    def start_sshd(self, timeout: float = 10.0) -> None:
        self._launch_sshd()
        self._wait_for_ssh_banner(timeout)

    def _launch_sshd(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        self.sshd_pid_path.unlink(missing_ok=True)
        # sshd listens before it daemonizes, so once this returns connections are queued, not refused.
        self.run([SSHD, "-f", str(self.sshd_config_path), "-E", str(self.files_dir / "sshd.log")])

    def stop_sshd(self) -> None:
        """Kill the listening sshd and every session it has, so the host is unreachable over SSH."""
        _kill_and_wait(pid for pid in processes_in_netns(self.netns) if _process_name(pid) == "sshd")
        self.sshd_pid_path.unlink(missing_ok=True)

    def _wait_for_ssh_banner(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((self.ssh_address, self.ssh_port), timeout=1) as conn:
                    if conn.recv(64).startswith(b"SSH-2.0-"):
                        return
            except OSError as error:
                if time.monotonic() > deadline:
                    log = (self.files_dir / "sshd.log")
                    raise RuntimeError(
                        f"{self.name}: sshd not answering on [{self.ssh_address}]:{self.ssh_port}: {error}; "
                        f"sshd.log: {log.read_text() if log.exists() else '(none)'}"
                    ) from error
                time.sleep(0.01)


@dataclass
class GuestNamespace:
    """A plain namespace plugged into a bridge of a host, standing in for a VM or a client."""

    netns: str
    host: LabHost
    bridge: str
    port: str         # the veth end inside the host, a port of `bridge` (where nft rules attach)
    device: str       # the veth end inside the guest
    mac: str

    def run(self, argv, input=None, timeout=60.0, check=True) -> subprocess.CompletedProcess:
        return _run(["ip", "netns", "exec", self.netns, *argv], input=input, timeout=timeout, check=check)


@dataclass
class Lab:
    workdir: Path
    n_hosts: int = 2
    owner_pid: int | None = None  # whose death makes this lab stale; 0: never stale, only down()
    lab_id: str | None = None
    hosts: list[LabHost] = field(default_factory=list)
    guests: list[GuestNamespace] = field(default_factory=list)

    def __post_init__(self):
        self.workdir = Path(self.workdir).resolve()
        if self.owner_pid is None:
            self.owner_pid = os.getpid()
        if not 1 <= self.n_hosts <= 99:
            raise ValueError("a lab has 1 to 99 hosts")

    @property
    def switch_netns(self) -> str:
        return f"{NAME_PREFIX}{self.lab_id}-sw"

    @property
    def client_key_path(self) -> Path:
        return self.workdir / "client_key"

    @property
    def description_path(self) -> Path:
        return self.workdir / "lab.json"

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc_info) -> None:
        self.down()

    # -- building

    def up(self) -> Lab:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._register()
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _register(self) -> None:
        REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
        record = {
            "owner_pid": self.owner_pid,
            "owner_start_time": _process_start_time(self.owner_pid) if self.owner_pid else None,
            "workdir": str(self.workdir),
        }
        while True:
            lab_id = secrets.token_hex(2)
            if any(_lab_names(lab_id)):
                continue  # leftovers of a crashed lab with this id: pick another
            try:
                fd = os.open(REGISTRY_DIR / f"{lab_id}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as registry_file:
                json.dump({"lab_id": lab_id, **record}, registry_file)
            self.lab_id = lab_id
            return

    def _build(self) -> None:
        self.hosts = [self._plan_host(index) for index in range(1, self.n_hosts + 1)]
        self._write_description()  # early, so `down` works on a half-built lab too
        keygens = [_start_keygen(self.client_key_path, "uclab client")]
        for host in self.hosts:
            host.files_dir.mkdir(parents=True, exist_ok=True)
            host.state_dir.mkdir(parents=True, exist_ok=True)
            keygens.append(_start_keygen(host.files_dir / "ssh_host_ed25519_key", host.name))

        root_lines = [f"netns add {self.switch_netns}"]
        for index, host in enumerate(self.hosts, start=1):
            root_lines += [
                f"netns add {host.netns}",
                f"link add {UNDERLAY_DEVICE} index {_DISTINCT_IFINDEX} netns {host.netns} type veth"
                f" peer name {host.name} netns {self.switch_netns}",
                f"link add {host.management_root_device} type veth peer name {MANAGEMENT_DEVICE} netns {host.netns}",
                f"addr add {_management_address(self.lab_id, index, 1)}/64 dev {host.management_root_device} nodad",
                f"link set {host.management_root_device} up",
            ]
        _ip_batch(root_lines)
        # Without snooping the switch floods multicast to every port, like the plain L2 segment the
        # VXLAN groups expect; with it, a group whose MLD report the bridge missed would be dropped.
        _ip_batch(
            ["link set lo up", f"link add {SWITCH_BRIDGE} type bridge mcast_snooping 0", f"link set {SWITCH_BRIDGE} up"]
            + [f"link set {host.name} master {SWITCH_BRIDGE} up" for host in self.hosts],
            netns=self.switch_netns,
        )
        for host in self.hosts:
            _ip_batch([
                "link set lo up",
                f"addr add {host.underlay_address}/64 dev {UNDERLAY_DEVICE} nodad",
                f"link set {UNDERLAY_DEVICE} up",
                f"addr add {host.ssh_address}/64 dev {MANAGEMENT_DEVICE} nodad",
                f"link set {MANAGEMENT_DEVICE} up",
            ], netns=host.netns)

        for host in self.hosts:
            _wait_for_links_up(host.netns, [UNDERLAY_DEVICE, MANAGEMENT_DEVICE])
        _wait_for_links_up(self.switch_netns, [host.name for host in self.hosts])

        for keygen in keygens:
            _, stderr = keygen.communicate(timeout=30)
            if keygen.returncode != 0:
                raise LabCommandError(keygen.returncode, keygen.args, "", stderr)
        (self.workdir / "authorized_keys").write_text(Path(f"{self.client_key_path}.pub").read_text())
        for host in self.hosts:
            public_key = (host.files_dir / "ssh_host_ed25519_key.pub").read_text().split()
            host.host_key = f"{public_key[0]} {public_key[1]}"
            host.known_hosts_path.write_text(f"{host.ssh_address} {host.host_key}\n")
            host.sshd_config_path.write_text(_sshd_config(host, self.workdir / "authorized_keys"))
        (self.workdir / "known_hosts").write_text(
            "".join(f"{host.ssh_address} {host.host_key}\n" for host in self.hosts)
        )
        for host in self.hosts:
            host._launch_sshd()
        for host in self.hosts:
            host._wait_for_ssh_banner(timeout=10)
        self._write_description()

    def _plan_host(self, index: int) -> LabHost:
        name = f"hv{index}"
        return LabHost(
            name=name,
            netns=f"{NAME_PREFIX}{self.lab_id}-{name}",
            ssh_address=_management_address(self.lab_id, index, 2),
            host_key="",
            client_key_path=self.client_key_path,
            underlay_address=f"fd00:1::{index:x}",
            state_dir=self.workdir / name / "state",
            files_dir=self.workdir / name,
            management_root_device=f"{NAME_PREFIX}{self.lab_id}m{index}",
        )

    def add_guest_namespace(self, host: LabHost, bridge: str, *, addresses=(), mac: str | None = None,
                            port: str | None = None, dad: bool = False) -> GuestNamespace:
        """A namespace whose `eth0` is a port of `bridge` on `host` (the bridge must exist).

        `addresses` are CIDRs added to eth0 (IPv6 ones with nodad). Duplicate address detection is
        off unless `dad`, so SLAAC addresses from a radvd on the bridge are usable at once.
        """
        index = len(self.guests) + 1
        netns = f"{NAME_PREFIX}{self.lab_id}-g{index}"
        port = port or f"guest{index}"
        _run(["ip", "netns", "add", netns])
        accept_dad = "1" if dad else "0"
        _run(["ip", "netns", "exec", netns, "sysctl", "-qw",
              f"net.ipv6.conf.all.accept_dad={accept_dad}", f"net.ipv6.conf.default.accept_dad={accept_dad}"])
        _ip_batch([f"link add eth0 index {_DISTINCT_IFINDEX} netns {netns} type veth peer name {port} netns {host.netns}"])
        _ip_batch([f"link set {port} master {bridge} up"], netns=host.netns)
        guest_lines = ["link set lo up"]
        if mac:
            guest_lines.append(f"link set eth0 address {mac}")
        guest_lines += [f"addr add {cidr} dev eth0" + (" nodad" if ":" in cidr else "") for cidr in addresses]
        guest_lines.append("link set eth0 up")
        _ip_batch(guest_lines, netns=netns)
        _wait_for_links_up(netns, ["eth0"])
        _wait_for_links_up(host.netns, [port])
        actual_mac = json.loads(_run(["ip", "-n", netns, "-j", "link", "show", "eth0"]).stdout)[0]["address"]
        guest = GuestNamespace(netns=netns, host=host, bridge=bridge, port=port, device="eth0", mac=actual_mac)
        self.guests.append(guest)
        return guest

    # -- describing and tearing down

    def describe(self) -> dict:
        return {
            "lab_id": self.lab_id,
            "workdir": str(self.workdir),
            "owner_pid": self.owner_pid,
            "switch_netns": self.switch_netns,
            "client_key_path": str(self.client_key_path),
            "known_hosts_path": str(self.workdir / "known_hosts"),
            "hosts": [
                {
                    "name": h.name, "netns": h.netns, "ssh_address": h.ssh_address, "ssh_port": h.ssh_port,
                    "ssh_user": h.ssh_user, "host_key": h.host_key, "client_key_path": str(h.client_key_path),
                    "underlay_device": h.underlay_device, "underlay_address": h.underlay_address,
                    "underlay_prefix": h.underlay_prefix, "state_dir": str(h.state_dir),
                    "management_root_device": h.management_root_device,
                }
                for h in self.hosts
            ],
        }

    def _write_description(self) -> None:
        self.description_path.write_text(json.dumps(self.describe(), indent=2) + "\n")

    @classmethod
    def from_workdir(cls, workdir: Path) -> Lab:
        """The lab described by workdir/lab.json (written by up()), e.g. to tear it down elsewhere."""
        description = json.loads((Path(workdir) / "lab.json").read_text())
        lab = cls(Path(description["workdir"]), n_hosts=max(len(description["hosts"]), 1),
                  owner_pid=description["owner_pid"], lab_id=description["lab_id"])
        for index, entry in enumerate(description["hosts"], start=1):
            host = lab._plan_host(index)
            host.host_key = entry["host_key"]
            lab.hosts.append(host)
        return lab

    def down(self) -> None:
        """Remove everything this lab made. Never raises; safe to call twice."""
        if self.lab_id is None:
            return
        try:
            _teardown(self.lab_id, self.workdir)
        except Exception as error:  # teardown runs after failed tests: report, never mask them
            print(f"tests.lab: teardown of lab {self.lab_id} failed: {error!r}", file=sys.stderr)
        self.guests = []


def _wait_for_links_up(netns: str, names: list[str], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        links = json.loads(_run(["ip", "-n", netns, "-j", "link", "show"]).stdout)
        down = [link["ifname"] for link in links if link["ifname"] in names and link["operstate"] != "UP"]
        if not down:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"links {down} in {netns} still not operationally up after {timeout} s")
        time.sleep(0.01)


def _management_address(lab_id: str, host_index: int, side: int) -> str:
    """Root side (1) or host side (2) of a host's management /64; unique per lab id and host."""
    # Canonical form, as ssh writes it in known_hosts and error messages.
    return ipaddress.IPv6Address(f"fd00:ff:{lab_id}:{host_index:x}::{side}").compressed


def _start_keygen(path: Path, comment: str) -> subprocess.Popen:
    for stale in (path, Path(f"{path}.pub")):
        stale.unlink(missing_ok=True)
    return subprocess.Popen(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _sshd_config(host: LabHost, authorized_keys: Path) -> str:
    return "\n".join([
        f"ListenAddress [{host.ssh_address}]:{host.ssh_port}",
        # Other hosts reach it on the underlay for migrations, with the keys the host program lets
        # in (restricted to its relay: vms/migration.py, migration-authorize).
        f"ListenAddress [{host.underlay_address}]:{host.ssh_port}",
        f"HostKey {host.files_dir / 'ssh_host_ed25519_key'}",
        f"PidFile {host.sshd_pid_path}",
        f"AuthorizedKeysFile {authorized_keys} {host.state_dir / 'migration' / 'authorized_keys'}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "StrictModes no",  # the lab's files live under /tmp
        "UsePAM no",
        "PrintMotd no",
        "MaxSessions 100",  # pooled connections open many channels
        "MaxStartups 100",
        "Subsystem sftp internal-sftp",
        "",
    ])


def cleanup_stale() -> list[str]:
    """Remove labs left by crashed runs: their owner is dead, or nothing registered them at all."""
    lab_ids = set()
    for name in _listdir(NETNS_DIR) + _listdir(Path("/sys/class/net")):
        match = _LAB_NAME.match(name)
        if match:
            lab_ids.add(match.group(1))
    lab_ids |= {entry[:-5] for entry in _listdir(REGISTRY_DIR) if _LAB_ID.match(entry[:-5]) and entry.endswith(".json")}
    removed = []
    for name in _listdir(NETNS_DIR):  # probes of lab_unavailable_reason() killed halfway
        probe = re.fullmatch(rf"{NAME_PREFIX}-probe-(\d+)", name)
        if probe and not _process_alive(int(probe.group(1))):
            _run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    for lab_id in sorted(lab_ids):
        try:
            record = json.loads((REGISTRY_DIR / f"{lab_id}.json").read_text())
        except FileNotFoundError:
            record = None  # a lab registers before building, so unregistered leftovers are debris
        except ValueError:
            continue  # being written right now by a lab that is coming up
        if record is not None:
            owner = record.get("owner_pid")
            if owner == 0 or (owner and _process_alive(owner, record.get("owner_start_time"))):
                continue
        workdir = Path(record["workdir"]) if record and record.get("workdir") else None
        removed += _teardown(lab_id, workdir)
    return removed


@functools.cache
def lab_unavailable_reason() -> str | None:
    """None when this machine can build a lab; otherwise why not. Missing programs are no reason:
    the lab then fails loudly, because the project's test command installs them."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, veths, sshd as root)"
    if not os.path.exists("/proc/self/ns/net"):
        return "this kernel has no network namespaces"
    if not os.path.isdir("/proc/sys/net/ipv6"):
        return "IPv6 is disabled in this kernel"
    if shutil.which("ip") is None:
        return None
    probe = f"{NAME_PREFIX}-probe-{os.getpid()}"
    checks = [
        ("network namespaces", ["ip", "netns", "add", probe]),
        ("veth", ["ip", "-n", probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"]),
        ("bridge", ["ip", "-n", probe, "link", "add", "probebr", "type", "bridge", "mcast_snooping", "0"]),
        ("vxlan over IPv6", ["ip", "-n", probe, "-6", "link", "add", "probevx", "type", "vxlan", "id", "1",
                             "dstport", "4789", "group", "ff05::1", "dev", "probe0", "ttl", "5"]),
    ]
    if shutil.which("nft"):
        checks.append(("nf_tables bridge family",
                       ["ip", "netns", "exec", probe, "nft", "add", "table", "bridge", "probe"]))
    try:
        for feature, argv in checks:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            if result.returncode != 0:
                return f"no {feature} here: `{' '.join(argv)}` said {result.stderr.strip()!r}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None
