"""Boot the demo guest under qemu (TCG) and check what it prints on its serial console.

Needs root for the networked test (it makes a throwaway network namespace with a bridge,
a tap and radvd). Every qemu, radvd and http server started here is stopped by pid, and
the namespace deleted, also when a test fails.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from images.demo_guest import build_demo_guest, guest_cmdline
from tests.lab.qmp import qmp
from tests.lab.waiting import wait_for_line

GUEST_MAC = "02:00:f0:a9:c4:4e"
GUEST_ADDRESS = "2001:db8:1:1:0:f0ff:fea9:c44e/64"  # EUI-64 of GUEST_MAC in the prefix below
ROUTER_ADDRESS = "2001:db8:1:1::1"
DNS_SERVER = "2001:db8:1:1::53"
RADVD_CONFIG = f"""interface br0 {{
    AdvSendAdvert on; MinRtrAdvInterval 3; MaxRtrAdvInterval 10;
    prefix 2001:db8:1:1::/64 {{ AdvOnLink on; AdvAutonomous on; }};
    RDNSS {DNS_SERVER} {{ AdvRDNSSLifetime 600; }};
}};
"""

BOOT_TIMEOUT = 120  # TCG on a busy 2-core machine; a quiet one needs about 5 s
POWERDOWN_TIMEOUT = 30

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                                reason="qemu-system-x86_64 is not installed")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@pytest.fixture(scope="session")
def guest():
    return build_demo_guest()


class RunningQemu:
    def __init__(self, process: subprocess.Popen, serial_log: Path, qmp_socket: Path):
        self.process = process
        self.serial_log = serial_log
        self.qmp_socket = qmp_socket
        self.started = time.monotonic()

    def serial(self) -> str:
        return self.serial_log.read_text(errors="replace") if self.serial_log.exists() else ""

    def wait_for_line(self, pattern: str, timeout: float = BOOT_TIMEOUT) -> re.Match:
        return wait_for_line(self.serial_log, re.compile(pattern), timeout, alive=lambda: self.process.poll() is None)

    def qmp(self, command: str) -> dict:
        return qmp(self.qmp_socket, command, timeout=10, check=False)

    def wait_for_exit(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)


@contextmanager
def running_qemu(tmp_path: Path, boot_arguments: list[str], netns: str | None = None):
    serial_log = tmp_path / "serial.log"
    qmp_socket = tmp_path / "qmp.sock"
    command = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-smp", "1",
        "-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
        "-serial", f"file:{serial_log}", "-qmp", f"unix:{qmp_socket},server=on,wait=off",
        *boot_arguments,
    ]
    if netns:
        command = ["ip", "netns", "exec", netns, *command]  # ip execs qemu: same pid
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield RunningQemu(process, serial_log, qmp_socket)
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def kill_by_pid_file(pid_file: Path) -> None:
    try:
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
    except (OSError, ValueError, IndexError):
        pass


def ip(*arguments: str) -> None:
    subprocess.run(["ip", *arguments], check=True, capture_output=True)


def test_second_build_comes_from_the_cache(guest):
    started = time.monotonic()
    again = build_demo_guest()
    assert again == guest
    assert time.monotonic() - started < 2
    for artifact in (guest.kernel, guest.initrd, guest.disk_qcow2):
        assert artifact.stat().st_size > 0
    assert guest.initrd.stat().st_size < 4 * 2**20
    assert "console=ttyS0" in guest.cmdline


def test_guest_cmdline_carries_the_settings():
    cmdline = guest_cmdline(ping="2001:db8::1", fetch="http://[2001:db8::1]/x", poweroff=True)
    assert "uc.ping=2001:db8::1" in cmdline.split()
    assert "uc.fetch=http://[2001:db8::1]/x" in cmdline.split()
    assert "uc.poweroff=1" in cmdline.split()
    with pytest.raises(ValueError):
        guest_cmdline(fetch="http://x/ y")


@needs_qemu
def test_direct_boot_without_network_runs_init_and_powers_off(guest, tmp_path):
    boot = ["-kernel", str(guest.kernel), "-initrd", str(guest.initrd),
            "-append", guest_cmdline(poweroff=True)]
    with running_qemu(tmp_path, boot) as qemu:
        assert qemu.wait_for_exit(BOOT_TIMEOUT) == 0
        serial = qemu.serial()
    assert f"UNCLOUD-BOOT {guest.kernel_version}" in serial
    assert "UNCLOUD-ACPI ok" in serial
    assert "UNCLOUD-ADDR eth0 none" in serial
    assert "UNCLOUD-READY" in serial
    assert "UNCLOUD-POWEROFF requested" in serial
    assert "UNCLOUD-WARN" not in serial


@needs_qemu
def test_disk_boots_alone_and_stops_on_acpi_powerdown(guest, tmp_path):
    overlay = tmp_path / "vm.qcow2"  # the cached disk stays untouched, as in production
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(guest.disk_qcow2),
                    "-F", "qcow2", str(overlay)], check=True)
    boot = ["-drive", f"file={overlay},if=virtio,format=qcow2"]
    with running_qemu(tmp_path, boot) as qemu:
        qemu.wait_for_line(r"UNCLOUD-READY")
        assert "UNCLOUD-ACPI ok" in qemu.serial()
        pressed = time.monotonic()
        assert qemu.qmp("system_powerdown") == {"return": {}}
        assert qemu.wait_for_exit(POWERDOWN_TIMEOUT) == 0
        print(f"disk boot to ready: {pressed - qemu.started:.1f} s, "
              f"powerdown to exit: {time.monotonic() - pressed:.1f} s")
        assert "UNCLOUD-POWEROFF acpi" in qemu.serial()


@needs_qemu
def test_config_drive_overrides_the_disk_cmdline(guest, tmp_path):
    overlay = tmp_path / "vm.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(guest.disk_qcow2),
                    "-F", "qcow2", str(overlay)], check=True)
    config_drive = tmp_path / "cidata.img"
    with config_drive.open("wb") as image:
        image.truncate(2 * 2**20)
    (tmp_path / "uncloud.cfg").write_text("# from the test\nuc.poweroff=1\n")
    (tmp_path / "meta-data").write_text("instance-id: demo-1\nlocal-hostname: demo-one\n")
    subprocess.run(["mkfs.vfat", "-n", "CIDATA", str(config_drive)], check=True,
                   capture_output=True)
    for name in ("uncloud.cfg", "meta-data"):
        subprocess.run(["mcopy", "-i", str(config_drive), str(tmp_path / name), f"::{name}"],
                       check=True)
    boot = ["-drive", f"file={overlay},if=virtio,format=qcow2",
            "-drive", f"file={config_drive},if=virtio,format=raw,readonly=on"]
    with running_qemu(tmp_path, boot) as qemu:
        assert qemu.wait_for_exit(BOOT_TIMEOUT) == 0
        serial = qemu.serial()
    assert re.search(r"^UNCLOUD-CIDATA /dev/vd\w+ ok", serial, re.MULTILINE), serial
    assert "UNCLOUD-HOSTNAME demo-one" in serial
    assert "UNCLOUD-POWEROFF requested" in serial


@pytest.fixture
def lab_network(tmp_path):
    """A namespace with a bridge (router address, radvd with RDNSS) and a tap for the guest,
    plus an http server on the bridge address. Nothing in it is routed anywhere."""
    netns = f"ucdg-{secrets.token_hex(4)}"
    radvd_pid = tmp_path / "radvd.pid"
    web_root = tmp_path / "web"
    web_root.mkdir()
    (web_root / "hello.txt").write_text("hello from the lab\n")
    web_server = None
    ip("netns", "add", netns)
    try:
        ip("-n", netns, "link", "set", "lo", "up")
        ip("-n", netns, "link", "add", "br0", "address", "02:00:00:00:00:01", "type", "bridge")
        ip("-n", netns, "-6", "addr", "add", f"{ROUTER_ADDRESS}/64", "dev", "br0", "nodad")
        ip("-n", netns, "link", "set", "br0", "up")
        ip("-n", netns, "tuntap", "add", "dev", "tap0", "mode", "tap")
        ip("-n", netns, "link", "set", "tap0", "master", "br0")
        ip("-n", netns, "link", "set", "tap0", "up")
        subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-qw",
                        "net.ipv6.conf.all.forwarding=1"], check=True)
        config = tmp_path / "radvd.conf"
        config.write_text(RADVD_CONFIG)
        subprocess.run(["ip", "netns", "exec", netns, "radvd", "-C", str(config),
                        "-p", str(radvd_pid), "-m", "logfile", "-l", str(tmp_path / "radvd.log")],
                       check=True)
        web_server = subprocess.Popen(
            ["ip", "netns", "exec", netns, "python3", "-m", "http.server", "--bind",
             ROUTER_ADDRESS, "--directory", str(web_root), "8080"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield netns
    finally:
        if web_server:
            stop_process(web_server)
        kill_by_pid_file(radvd_pid)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)


@needs_qemu
@needs_root
def test_guest_takes_its_slaac_address_and_reaches_the_router(guest, lab_network, tmp_path):
    fetch_url = f"http://[{ROUTER_ADDRESS}]:8080/hello.txt"
    boot = ["-kernel", str(guest.kernel), "-initrd", str(guest.initrd),
            "-append", guest_cmdline(ping=ROUTER_ADDRESS, fetch=fetch_url, poweroff=True),
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={GUEST_MAC}"]
    with running_qemu(tmp_path, boot, netns=lab_network) as qemu:
        address = qemu.wait_for_line(r"^UNCLOUD-ADDR eth0 (\S+)").group(1)
        boot_to_address = time.monotonic() - qemu.started
        assert qemu.wait_for_exit(BOOT_TIMEOUT) == 0
        serial = qemu.serial()
    print(f"qemu start to address: {boot_to_address:.1f} s")
    assert address == GUEST_ADDRESS
    assert f"UNCLOUD-MAC eth0 {GUEST_MAC}" in serial
    assert f"UNCLOUD-DNS {DNS_SERVER}" in serial
    assert f"UNCLOUD-PING {ROUTER_ADDRESS} ok" in serial
    assert f"UNCLOUD-FETCH {fetch_url} ok " in serial
    assert "hello from the lab" in serial
