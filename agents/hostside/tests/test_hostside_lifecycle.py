"""Every verb twice leaves the same host; down verbs remove what up verbs made."""
import os
import subprocess
import time
from pathlib import Path

from hostside_testlib import fails, inventory, net_spec, nic, ok, process_gone, vm_spec

PREFIX = "2001:db8:100:1::/64"
VM_UUID = "6f1c2d3e-0000-4000-8000-000000000001"
MAC = "02:00:00:aa:00:01"


def test_net_up_twice_and_net_down_twice(hosts):
    host = hosts[0]
    before = inventory(host)
    first = ok(host, "net-up", **net_spec(100, PREFIX, host))
    assert first["group"] == "ff05::64" and first["router_mac"] == "02:75:63:00:00:64"
    assert first["router_link_local"] == "fe80::75:63ff:fe00:64"
    assert first["mtu"] == 1430  # 1500 underlay minus the VXLAN-over-IPv6 overhead
    after_first = inventory(host)
    second = ok(host, "net-up", **net_spec(100, PREFIX, host))
    assert second["changes"] == [] and second["radvd_pid"] == first["radvd_pid"]
    assert inventory(host) == after_first

    assert [bridge["name"] for bridge in after_first["bridges"]] == ["br100"]
    assert after_first["bridges"][0]["address"] == "02:75:63:00:00:64"
    assert after_first["vxlans"] == [{"name": "vxlan100", "master": "br100", "up": True, "mtu": 1430,
                                      "vni": 100, "group": "ff05::64",
                                      "underlay_device": host.underlay_device}]
    assert after_first["networks"][0]["radvd_pid"] == first["radvd_pid"]
    assert after_first["ruleset"]["present"]
    assert after_first["unknown_radvd"] == [] and after_first["unknown_qemu"] == []

    config = (Path(host.state_dir) / "networks/100/radvd.conf").read_text()
    for needle in ("interface br100", "AdvSendAdvert on", f"prefix {PREFIX}", "AdvOnLink on",
                   "AdvAutonomous on", "RDNSS 2001:db8:100:1::53", "AdvRDNSSLifetime 600",
                   "DNSSL example.org"):
        assert needle in config

    ok(host, "net-down", vni=100)
    after_down = inventory(host)
    ok(host, "net-down", vni=100)
    assert inventory(host) == after_down
    assert after_down["bridges"] == [] and after_down["vxlans"] == [] and after_down["networks"] == []
    assert not (Path(host.state_dir) / "networks/100").exists()
    assert process_gone(first["radvd_pid"])
    assert after_down["taps"] == before["taps"] == []


def test_net_up_applies_a_changed_spec(hosts):
    host = hosts[0]
    first = ok(host, "net-up", **net_spec(100, PREFIX, host))
    changed = ok(host, "net-up", **net_spec(100, PREFIX, host, dns_search=["example.net"]))
    assert "restarted radvd" in changed["changes"] and changed["radvd_pid"] != first["radvd_pid"]
    assert "DNSSL example.net" in (Path(host.state_dir) / "networks/100/radvd.conf").read_text()
    # A vxlan someone left with another group is rebuilt, not trusted.
    host.run(["ip", "link", "del", "vxlan100"])
    host.run(["ip", "-6", "link", "add", "vxlan100", "type", "vxlan", "id", "100", "dstport", "4789",
              "group", "ff05::1:64", "dev", host.underlay_device, "ttl", "5"])
    repaired = ok(host, "net-up", **net_spec(100, PREFIX, host, dns_search=["example.net"]))
    assert "replaced vxlan100" in repaired["changes"]
    assert inventory(host)["vxlans"][0]["group"] == "ff05::64"
    assert inventory(host)["vxlans"][0]["master"] == "br100"


def test_vm_up_twice_vm_down_twice(hosts):
    host = hosts[0]
    ok(host, "net-up", **net_spec(100, PREFIX, host))
    spec = vm_spec(VM_UUID, [nic(MAC, 100, PREFIX)], name="lifecycle")
    started = time.monotonic()
    first = ok(host, "vm-up", **spec)
    elapsed = time.monotonic() - started
    print(f"vm-up to QMP running under TCG: {elapsed:.2f} s")
    assert first["status"] == "running" and not first["already_running"]
    assert first["accel"] == "tcg"
    tap = first["taps"][0]
    assert len(tap) <= 15
    vm_dir = Path(host.state_dir) / "vms" / VM_UUID
    for name in ("qmp.sock", "vnc.sock", "qemu.pid", "spec.json"):
        assert (vm_dir / name).exists(), name
    with open(f"/proc/{first['pid']}/cmdline", "rb") as handle:
        argv = handle.read().split(b"\0")
    assert b"-uuid" in argv and VM_UUID.encode() in argv and b"q35,accel=tcg" in argv
    assert f"virtio-net-pci,id=nic0,netdev=net0,mac={MAC},romfile=,bus=nicport0".encode() in argv

    after_first = inventory(host)
    second = ok(host, "vm-up", **spec)
    assert second["already_running"] and second["pid"] == first["pid"] and second["changes"] == []
    assert inventory(host) == after_first

    assert after_first["vms"] == [{"uuid": VM_UUID, "name": "lifecycle", "pid": first["pid"],
                                   "status": "running", "qmp_error": None, "taps": [tap]}]
    assert [(t["name"], t["master"], t["up"]) for t in after_first["taps"]] == [(tap, "br100", True)]
    assert after_first["ruleset"]["guarded_ports"] == [tap]
    assert f"guard_{tap}" in after_first["ruleset"]["chains"]
    # The guest's stateful firewall lives in the inet table (connection tracking).
    host.run(["nft", "list", "chain", "inet", "uncloud_sg", f"ingress_{tap}"])
    assert after_first["unknown_qemu"] == []

    status = ok(host, "vm-status", uuid=VM_UUID)
    assert status["status"] == "running" and status["pid"] == first["pid"] and status["known"]

    down = ok(host, "vm-down", uuid=VM_UUID, timeout_s=1)
    assert down["stopped_by"] in ("powerdown", "killed")  # no guest OS answers the button here
    after_down = inventory(host)
    assert process_gone(first["pid"])
    for name in ("qmp.sock", "vnc.sock", "qemu.pid"):
        assert not (vm_dir / name).exists(), name
    assert after_down["taps"] == []
    assert after_down["ruleset"]["guarded_ports"] == []
    assert not any(tap in chain for chain in after_down["ruleset"]["chains"])
    assert tap not in host.run(["nft", "list", "ruleset"]).stdout
    assert after_down["vms"] == [{"uuid": VM_UUID, "name": "lifecycle", "pid": None,
                                  "status": "stopped", "qmp_error": None, "taps": [tap]}]

    again = ok(host, "vm-down", uuid=VM_UUID, timeout_s=1)
    assert again["stopped_by"] == "already_stopped" and again["changes"] == []
    assert inventory(host) == after_down
    never_existed = ok(host, "vm-down", uuid="6f1c2d3e-0000-4000-8000-0000000000ff")
    assert never_existed["stopped_by"] == "already_stopped"
    assert ok(host, "vm-status", uuid=VM_UUID)["status"] == "stopped"


def test_crashed_vm_is_stopped_and_vm_up_restarts_it(hosts):
    host = hosts[0]
    ok(host, "net-up", **net_spec(100, PREFIX, host))
    spec = vm_spec(VM_UUID, [nic(MAC, 100, PREFIX)])
    first = ok(host, "vm-up", **spec)
    os.kill(first["pid"], 9)
    deadline = time.monotonic() + 5
    while not process_gone(first["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ok(host, "vm-status", uuid=VM_UUID)["status"] == "stopped"
    restarted = ok(host, "vm-up", **spec)
    assert not restarted["already_running"] and restarted["pid"] != first["pid"]
    assert restarted["status"] == "running"
    ok(host, "vm-down", uuid=VM_UUID, hard=True)


def test_net_down_refuses_while_guests_are_attached(hosts):
    host = hosts[0]
    ok(host, "net-up", **net_spec(100, PREFIX, host))
    vm = ok(host, "vm-up", **vm_spec(VM_UUID, [nic(MAC, 100, PREFIX)]))
    error = fails(host, "net-down", {"state_dir": str(host.state_dir), "vni": 100}, "in_use")
    assert error["ports"] == vm["taps"]
    assert inventory(host)["bridges"]  # nothing was taken down
    forced = ok(host, "net-down", vni=100, force=True)
    assert forced["detached_ports"] == vm["taps"]
    assert inventory(host)["bridges"] == []
    ok(host, "vm-down", uuid=VM_UUID, hard=True)
    assert inventory(host)["taps"] == []


def test_unknown_qemu_under_the_state_dir_is_reported(hosts):
    """A qemu whose files sit in this host's state_dir but which no VM dir/spec describes."""
    host, other_host = hosts
    stray_dir = Path(host.state_dir) / "vms" / "stray"
    stray_dir.mkdir(parents=True)
    host.run(["qemu-system-x86_64", "-machine", "q35,accel=tcg", "-m", "32", "-nodefaults",
              "-display", "none", "-qmp", f"unix:{stray_dir}/qmp.sock,server=on,wait=off",
              "-pidfile", f"{stray_dir}/qemu.pid", "-daemonize"])
    stray_pid = int((stray_dir / "qemu.pid").read_text())
    try:
        assert inventory(host)["unknown_qemu"] == [{"pid": stray_pid, "vm_dir_name": "stray"}]
        # Lab hosts share one process table: the other host must not claim it.
        assert inventory(other_host)["unknown_qemu"] == []
    finally:
        os.kill(stray_pid, 9)


def test_qemu_failure_reports_stderr(hosts):
    host = hosts[0]
    ok(host, "net-up", **net_spec(100, PREFIX, host))
    broken = Path(host.state_dir) / "broken.qcow2"
    broken.write_bytes(b"this is not a qcow2 image" * 100)
    spec = vm_spec(VM_UUID, [nic(MAC, 100, PREFIX)], disks=[{"path": str(broken), "format": "qcow2"}])
    error = fails(host, "vm-up", {"state_dir": str(host.state_dir), **spec}, "qemu_failed")
    assert "qcow2" in error["stderr"] and error["argv"][0] == "qemu-system-x86_64"
    assert "serial_tail" in error
    # qemu's own complaint leads the message (a banner that cuts it off still shows why).
    first_complaint = next(line for line in error["stderr"].splitlines() if line.startswith("qemu-system-x86_64:"))
    assert error["message"] == f"qemu failed to start: {first_complaint.strip()}"
    assert ok(host, "vm-status", uuid=VM_UUID)["status"] == "stopped"
    # A guest that never ran leaves no tap on the bridge and no guarded port behind.
    after = inventory(host)
    assert after["taps"] == [] and after["ruleset"]["guarded_ports"] == []
    assert not list((Path(host.state_dir) / "ports").glob("*.json"))
    ok(host, "vm-down", uuid=VM_UUID)
    assert inventory(host)["taps"] == [] and inventory(host)["ruleset"]["guarded_ports"] == []


def test_vm_with_a_real_disk_image(hosts):
    host = hosts[0]
    ok(host, "net-up", **net_spec(100, PREFIX, host))
    disk = Path(host.state_dir) / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    spec = vm_spec(VM_UUID, [nic(MAC, 100, PREFIX)], disks=[{"path": str(disk), "format": "qcow2"}])
    vm = ok(host, "vm-up", **spec)
    with open(f"/proc/{vm['pid']}/cmdline", "rb") as handle:
        assert f"file={disk},format=qcow2,if=virtio,id=disk0".encode() in handle.read().split(b"\0")
    ok(host, "vm-down", uuid=VM_UUID, hard=True)
    assert disk.exists()  # disks belong to the control plane
