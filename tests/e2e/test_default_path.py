"""The first hour of a new user, as CI: `bin/run` itself with its defaults (SQLite, file queue, this
machine as the hypervisor, no accelerator override), a token made the README's way (portal login,
second factor with the key the page shows, token page), the README's VM create through the API, and
the guest reporting on its serial console the address the API showed. Then Ctrl-C's honesty (the
guest keeps running and the stop message says so) and `bin/run --down` (everything goes).

Where it runs: one fresh network namespace holds the whole product (gunicorn, worker, beat, qemu,
bridges, VXLAN, radvd, nft tables), so the root namespace of the machine running the suite is never
touched; the namespace gets an `eth0` (a veth whose peer stays inside it) with default routes, like
a machine's uplink. The test reaches the portal through a socat on 127.0.0.1 that enters the
namespace for each connection. Its own data dir, removed at the end with everything it started.
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from images.demo_guest import build_demo_guest
from tests.e2e.newcomer import Newcomer
from tests.lab.waiting import wait_for as lab_wait_for

ROOT = Path(__file__).resolve().parents[2]
ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1L0f0dB4JqZ1nlMHVzrb6R2q1zwI0iNQ7DP9BYbJt newcomer@laptop"
START_TIMEOUT_S = 600
BOOT_TIMEOUT_S = 900
# What the checkout may gain from running the product: caches of Python and the tools.
EXPECTED_IN_CHECKOUT = re.compile(r"(^|/)(__pycache__|\.pytest_cache|\.ruff_cache)(/|$)|^\.venv/|^var/")


def run(argv, **kwargs):
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120, **kwargs)


def newcomer_environment(data_dir: Path) -> dict:
    """A shell with nothing of uncloud set: no DATABASE_URL, broker, UNCLOUD_VM_ACCEL... Only the
    data dir is the test's own (bin/run would use ./var)."""
    environment = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "UNCLOUD_CACHE_DIR") if key in os.environ}
    environment["UNCLOUD_DATA_DIR"] = str(data_dir)
    return environment


def checkout_changes() -> set[str]:
    listing = run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=ROOT).stdout
    return {line[3:] for line in listing.splitlines() if not EXPECTED_IN_CHECKOUT.search(line[3:])}


def free_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if text in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry))
            except OSError:
                continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_for(what: str, check, timeout: float, interval: float = 1.0, describe=lambda: ""):
    """The lab's wait_for, with this test's way of saying what it waited for."""
    return lab_wait_for(check, timeout=timeout, interval=interval,
                        message=lambda: f"{what}: not after {timeout} s. {describe()}")


class Machine:
    """A fresh network namespace standing in for a newcomer's machine, and bin/run inside it."""

    def __init__(self, data_dir: Path):
        self.netns = f"ucfr{secrets.token_hex(3)}"
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}-bin-run.log"
        self.run_process = None
        self.forwarder = None
        self.port = None

    def up(self):
        run(["ip", "netns", "add", self.netns])
        for command in (["link", "set", "lo", "up"],
                        ["link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer"],
                        ["link", "set", "eth0", "up"], ["link", "set", "eth0peer", "up"],
                        ["-6", "addr", "add", "2001:db8:ff::1/64", "dev", "eth0", "nodad"],
                        ["-6", "route", "add", "default", "dev", "eth0"],
                        ["addr", "add", "192.0.2.1/24", "dev", "eth0"],
                        ["route", "add", "default", "dev", "eth0"]):
            run(["ip", "-n", self.netns, *command])
        self.port = free_local_port()
        self.forwarder = subprocess.Popen(
            ["socat", f"TCP-LISTEN:{self.port},bind=127.0.0.1,fork,reuseaddr",
             f"EXEC:ip netns exec {self.netns} socat STDIO TCP\\:127.0.0.1\\:8000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def bin_run(self, *arguments, wait=False):
        argv = ["ip", "netns", "exec", self.netns, str(ROOT / "bin" / "run"), *arguments]
        if wait:
            return subprocess.run(argv, cwd=ROOT, env=newcomer_environment(self.data_dir), capture_output=True,
                                  text=True, timeout=300)
        log = open(self.log_path, "w")
        self.run_process = subprocess.Popen(argv, cwd=ROOT, env=newcomer_environment(self.data_dir), stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self.run_process

    def type_at_console(self, url: str, line: str, answer: str) -> str:
        """What a console WebSocket shows after `line` is typed (again every 5 s) until `answer` appears,
        from inside the machine with the CLI's own client and the portal's origin, as a browser sends it."""
        script = """
import socket, sys, time
from uncloud_cli.console import WebSocket
url, line, answer = sys.argv[1:4]
console = WebSocket.connect(url, "http://127.0.0.1:8000")
console.sock.settimeout(2)
seen, typed_at, deadline = b"", 0.0, time.monotonic() + 120
while answer.encode() not in seen and time.monotonic() < deadline:
    if time.monotonic() - typed_at > 5:
        console.send(line.encode() + b"\\r")
        typed_at = time.monotonic()
    try:
        data = console.receive()
    except socket.timeout:
        continue
    if isinstance(data, tuple):
        seen += repr(data).encode()
        break
    seen += data
console.close()
sys.stdout.write(seen.decode(errors="replace"))
"""
        argv = ["ip", "netns", "exec", self.netns, str(ROOT / ".venv" / "bin" / "python"), "-c", script, url, line,
                answer]
        return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=180).stdout

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def links(self) -> list[str]:
        return [link["ifname"] for link in json.loads(run(["ip", "-n", self.netns, "-j", "link"]).stdout)]

    def nft_tables(self) -> str:
        return run(["ip", "netns", "exec", self.netns, "nft", "list", "tables"]).stdout

    def down(self):
        """Everything this machine ran, by namespace and by data dir; then the namespace."""
        if self.run_process is not None and self.run_process.poll() is None:
            os.killpg(self.run_process.pid, signal.SIGKILL)
            self.run_process.wait()
        pids = set(processes_mentioning(str(self.data_dir)))
        listed = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True)
        pids |= {int(pid) for pid in listed.stdout.split()}
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for("the machine's processes to end", lambda: not any(alive(pid) for pid in pids), 30, 0.1)
        if self.forwarder is not None:
            self.forwarder.kill()
            self.forwarder.wait()
        subprocess.run(["ip", "netns", "del", self.netns], check=False)


@pytest.fixture
def machine(_lab_cleaned_up):
    # Build the demo guest where the network is (the namespace has none): bin/run finds it cached.
    build_demo_guest()
    # bin/run's own first steps (Debian packages, the venv) also need the network: run them here.
    run(["bash", "-c", 'source bin/lib/common.sh; ensure_venv "$UNCLOUD_ROOT/requirements.txt"'], cwd=ROOT)
    data_dir = Path(tempfile.mkdtemp(prefix="ucfr-", dir="/tmp"))
    made = Machine(data_dir)
    try:
        made.up()
        yield made
    finally:
        made.down()
        shutil.rmtree(data_dir, ignore_errors=True)
        made.log_path.unlink(missing_ok=True)


def test_a_newcomer_boots_a_vm_with_bin_run_and_the_readme(machine):
    before = checkout_changes()
    bin_run = machine.bin_run()
    wait_for("bin/run to say it is up", lambda: "uncloud is up" in machine.log() or bin_run.poll() is not None,
             START_TIMEOUT_S, describe=machine.log)
    assert bin_run.poll() is None, machine.log()
    password = re.search(r"log in as demo / (\S+)", machine.log()).group(1)

    newcomer = Newcomer(f"http://127.0.0.1:{machine.port}")
    newcomer.log_in("demo", password)
    newcomer.turn_on_second_factor()
    newcomer.make_token("laptop")

    status, key = newcomer.api("POST", "ssh-keys/", {"name": "laptop", "public_key": ED25519})
    assert status == 201, key
    status, vm = newcomer.api("POST", "vms/", {"name": "web1", "cores": 2, "memory": "2GiB", "disk": "20G",
                                                "ssh_keys": [key["uuid"]]}, {"Idempotency-Key": "web1-1"})
    assert status == 201, vm
    status, images = newcomer.api("GET", "images/")
    demo_image = next(image for image in images["results"] if image["name"] == "uncloud-demo")
    assert vm["image"] == demo_image["uuid"]  # no image named: the site's default, not an empty disk
    [address] = vm["ipv6_addresses"]

    def running():
        answer = newcomer.api("GET", f"vms/{vm['uuid']}/")[1]
        assert answer["status"] != "error", answer["status_message"]
        return answer["status"] == "running"

    operations = f"operations/?target_uuid={vm['uuid']}"
    wait_for("the VM to run", running, BOOT_TIMEOUT_S, 2, describe=lambda: str(newcomer.api("GET", operations)[1]))
    serial = machine.data_dir / "hosts" / "local" / "vms" / vm["uuid"] / "serial.log"

    def reported_address():
        found = re.search(r"UNCLOUD-ADDR eth0 (\S+)/64", serial.read_text(errors="replace") if serial.exists() else "")
        return found and found.group(1)

    assert wait_for("the guest to report its address", reported_address, BOOT_TIMEOUT_S, 1,
                    describe=lambda: serial.read_text(errors="replace")[-2000:] if serial.exists() else "no log") \
        == address
    # The console tab's serial line, through the gateway bin/run started: a ticket from the API, the
    # guest's shell answering a line typed into it.
    status, ticket = newcomer.api("POST", f"vms/{vm['uuid']}/console/", {"kind": "serial"})
    assert status == 201, ticket
    shown = machine.type_at_console(ticket["url"], "echo newcomer-$((6*7))", "newcomer-42")
    assert "newcomer-42" in shown, shown + machine.log()[-2000:]
    qemu_pid = int((serial.parent / "qemu.pid").read_text())
    cmdline = Path(f"/proc/{qemu_pid}/cmdline").read_bytes().split(b"\0")
    # auto picked what works on this machine (here TCG: its KVM dies with 'failed to set MSR').
    assert any(part.startswith(b"q35,accel=") for part in cmdline)

    # `--down` (or a second bin/run) beside the running one is refused: its control plane would start
    # the guests again at once, and two of them would do every step twice.
    for arguments in (("--down",), ()):
        beside = machine.bin_run(*arguments, wait=True)
        said = beside.stdout + beside.stderr
        assert beside.returncode == 1 and "bin/run is" in said and "running" in said, said
    assert Path(f"/proc/{qemu_pid}").exists()

    # SIGTERM to bin/run's whole process group, as a service manager or `kill -TERM -PGID` sends it (this
    # once left the Celery worker hanging for ever; Ctrl-C is SIGINT to the same group). The guest stays.
    os.killpg(bin_run.pid, signal.SIGTERM)
    wait_for("bin/run to stop", lambda: bin_run.poll() is not None, 120, 0.5,
             describe=lambda: machine.log()[-3000:] + subprocess.run(
                 ["ps", "-o", "pid,stat,args", "-g", str(bin_run.pid)], capture_output=True, text=True).stdout)
    assert "still running on this machine: the guests" in machine.log() and "bin/run --down" in machine.log()
    assert alive(qemu_pid)

    down = machine.bin_run("--down", wait=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped 1 guest(s), took 1 network(s) down" in down.stdout, down.stdout
    assert not alive(qemu_pid)
    assert not [link for link in machine.links() if link.startswith(("br", "vxlan", "tap", "uc"))], machine.links()
    assert "uncloud" not in machine.nft_tables()
    assert processes_mentioning(str(machine.data_dir)) == []  # no radvd, metadata service, qemu
    # Nothing of the product in the checkout outside var/ (the file broker wrote ./control once).
    assert checkout_changes() == before
