"""Real guests (images/demo_guest) under TCG: SLAAC gives the EUI-64 address, the VXLAN carries a
ping between hosts, another network does not, and vm-down powers a guest off through ACPI."""
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from hostside_testlib import eui64, inventory, net_spec, nic, ok, vm_spec

from tests.lab.waiting import wait_for_line

demo_guest = pytest.importorskip("images.demo_guest")

PREFIX = "2001:db8:300:1::/64"
SERVER_MAC, CLIENT_MAC, STRANGER_MAC = "02:00:00:cc:00:01", "02:00:00:cc:00:02", "02:00:00:cc:00:03"
SERVER_UUID = "8b000000-0000-4000-8000-000000000001"
CLIENT_UUID = "8b000000-0000-4000-8000-000000000002"
STRANGER_UUID = "8b000000-0000-4000-8000-000000000003"
BOOT_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def guest():
    return demo_guest.build_demo_guest()


def copy_into_state_dir(host, guest):
    """Paths in a spec must be below the host's state_dir."""
    images = Path(host.state_dir) / "images"
    images.mkdir(exist_ok=True)
    shutil.copy(guest.kernel, images / "vmlinuz")
    shutil.copy(guest.initrd, images / "initrd.gz")
    return {"kernel": str(images / "vmlinuz"), "initrd": str(images / "initrd.gz")}


def overlay_disk(host, guest, name):
    overlay = Path(host.state_dir) / f"{name}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(guest.disk_qcow2),
                    "-F", "qcow2", str(overlay)], check=True)
    return {"path": str(overlay), "format": "qcow2"}


def test_guests_get_their_eui64_and_ping_only_within_their_network(hosts, guest):
    server_host, client_host = hosts
    ok(server_host, "net-up", **net_spec(100, PREFIX, server_host))
    ok(client_host, "net-up", **net_spec(100, PREFIX, client_host))
    # Another network with the very same /64: the stranger believes the server is on-link, so
    # only the isolation of the VXLANs stands between them.
    ok(client_host, "net-up", **net_spec(200, PREFIX, client_host))
    server_address = eui64(PREFIX, SERVER_MAC)

    started = time.monotonic()
    server = ok(server_host, "vm-up", **vm_spec(
        SERVER_UUID, [nic(SERVER_MAC, 100, PREFIX)], name="server", memory_mib=256,
        disks=[overlay_disk(server_host, guest, "server")]))
    print(f"server vm-up to QMP running: {time.monotonic() - started:.2f} s")
    address_line = wait_for_line(server["serial_log"], "UNCLOUD-ADDR eth0", BOOT_TIMEOUT_S)
    print(f"server vm-up to SLAAC address: {time.monotonic() - started:.1f} s")
    assert address_line == f"UNCLOUD-ADDR eth0 {server_address}/64"

    direct_boot = copy_into_state_dir(client_host, guest)
    client = ok(client_host, "vm-up", **vm_spec(
        CLIENT_UUID, [nic(CLIENT_MAC, 100, PREFIX)], name="client", memory_mib=256,
        cmdline=demo_guest.guest_cmdline(ping=str(server_address)), **direct_boot))
    stranger = ok(client_host, "vm-up", **vm_spec(
        STRANGER_UUID, [nic(STRANGER_MAC, 200, PREFIX)], name="stranger", memory_mib=256,
        cmdline=demo_guest.guest_cmdline(ping=str(server_address)), **direct_boot))

    client_address = wait_for_line(client["serial_log"], "UNCLOUD-ADDR eth0", BOOT_TIMEOUT_S)
    assert client_address == f"UNCLOUD-ADDR eth0 {eui64(PREFIX, CLIENT_MAC)}/64"
    assert wait_for_line(client["serial_log"], "UNCLOUD-PING", BOOT_TIMEOUT_S) == \
        f"UNCLOUD-PING {server_address} ok"
    assert wait_for_line(stranger["serial_log"], "UNCLOUD-PING", BOOT_TIMEOUT_S) == \
        f"UNCLOUD-PING {server_address} fail"
    assert wait_for_line(stranger["serial_log"], "UNCLOUD-DNS", 5) == \
        "UNCLOUD-DNS 2001:db8:300:1::53"  # RDNSS from radvd

    # The demo guest handles the ACPI power button: vm-down is a clean shutdown, not a kill.
    started = time.monotonic()
    down = ok(server_host, "vm-down", uuid=SERVER_UUID, timeout_s=60)
    print(f"server vm-down (ACPI): {time.monotonic() - started:.1f} s")
    assert down["stopped_by"] == "powerdown"
    assert "UNCLOUD-POWEROFF acpi" in Path(server["serial_log"]).read_text(errors="replace")
    for vm_uuid in (CLIENT_UUID, STRANGER_UUID):
        ok(client_host, "vm-down", uuid=vm_uuid, hard=True)
    for host in hosts:
        assert inventory(host)["taps"] == []
