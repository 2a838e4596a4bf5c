"""console-pipe over the control plane's SSH connection: the demo guest's serial shell answers
through the socket while serial.log still records it, and VNC asks for the one-time password."""
import time
from pathlib import Path

import pytest
from hostside_testlib import ok, vm_spec

from agents.hostagent import HostAgent, HostError
from agents.transport import HostConnection
from tests.lab.waiting import wait_for_line

demo_guest = pytest.importorskip("images.demo_guest")

VM_UUID = "8c000000-0000-4000-8000-000000000001"
BOOT_TIMEOUT_S = 180


def agent_of(host):
    connection = HostConnection(name=host.name, address=host.ssh_address, port=host.ssh_port,
                                user=host.ssh_user, host_key=host.host_key,
                                key_file=str(host.client_key_path))
    return HostAgent(connection, str(host.state_dir))


def read_until(stream, needle: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        assert time.monotonic() < deadline, f"no {needle!r} in {seen[-500:]!r}"
        data = stream.receive_bytes(0.5)
        assert data != b"", f"the console ended before {needle!r}: {seen[-500:]!r}"
        seen += data or b""
    return seen


def test_serial_and_vnc_consoles_through_the_pipe(hosts):
    from test_hostside_guests import overlay_disk

    host = hosts[0]
    guest = demo_guest.build_demo_guest()
    ok(host, "vm-up", **vm_spec(VM_UUID, [], name="console", memory_mib=256,
                                disks=[overlay_disk(host, guest, "console")]))
    serial_log = Path(host.state_dir) / "vms" / VM_UUID / "serial.log"
    wait_for_line(serial_log, "UNCLOUD-READY", BOOT_TIMEOUT_S)
    agent = agent_of(host)

    serial = agent.open_console(VM_UUID, "serial")
    try:
        serial.send_bytes(b"\recho console-$((6*7))\r")
        read_until(serial, b"console-42", 60)
    finally:
        serial.close()
    # The same line is still a log file: the boot log and what the console typed.
    wait_for_line(serial_log, "console-42", 10)

    vnc = agent.open_console(VM_UUID, "vnc", vnc_password="Ab3dEf7h", password_valid_s=5)
    try:
        assert read_until(vnc, b"\n", 10).startswith(b"RFB 003.008")
        vnc.send_bytes(b"RFB 003.008\n")
        security = read_until(vnc, b"\x02", 10)
        # One security type offered, VNC authentication (2): without the password nobody gets in.
        assert security == b"\x01\x02", security
    finally:
        vnc.close()

    with pytest.raises(HostError) as refused:
        agent.open_console(VM_UUID, "vnc", vnc_password="short")
    assert refused.value.code == "bad_spec"
    with pytest.raises(HostError) as absent:
        agent.open_console("8c000000-0000-4000-8000-0000000000ff", "serial")
    assert absent.value.code == "not_running"
    ok(host, "vm-down", uuid=VM_UUID, timeout_s=1)
