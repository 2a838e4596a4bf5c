"""host-down (bin/run --down): every guest and network of a state dir down, our nft tables gone,
disks left; twice is the same as once."""
from pathlib import Path

from hostside_testlib import inventory, net_spec, nic, ok, process_gone, vm_spec

PREFIX_A = "2001:db8:100:a::/64"
PREFIX_B = "2001:db8:100:b::/64"
VM_A = "6f1c2d3e-0000-4000-8000-0000000000d1"
VM_B = "6f1c2d3e-0000-4000-8000-0000000000d2"


def nft_table_exists(host, family, table):
    return host.run(["nft", "list", "table", family, table], check=False).returncode == 0


def test_host_down_takes_every_guest_and_network_down(hosts):
    host = hosts[0]
    ok(host, "net-up", **net_spec(110, PREFIX_A, host))
    network_b = ok(host, "net-up", **net_spec(111, PREFIX_B, host))
    first = ok(host, "vm-up", **vm_spec(VM_A, [nic("02:00:00:aa:0d:01", 110, PREFIX_A)], name="a"))
    second = ok(host, "vm-up", **vm_spec(VM_B, [nic("02:00:00:aa:0d:02", 111, PREFIX_B)], name="b"))
    ok(host, "metadata-up")
    guard_pid = ok(host, "heartbeat", lease_s=600)["guard_pid"]  # as the control plane's heartbeat starts it
    disk = Path(host.state_dir) / "disks" / "keep.qcow2"
    disk.parent.mkdir(exist_ok=True)
    disk.write_bytes(b"customer data")
    assert nft_table_exists(host, "bridge", "uncloud") and nft_table_exists(host, "inet", "uncloud_sg")

    answer = ok(host, "host-down", hard=True, underlay_device=host.underlay_device)
    assert sorted(answer["stopped_vms"]) == [VM_A, VM_B] and sorted(answer["networks_down"]) == [110, 111]
    for pid in (first["pid"], second["pid"], network_b["radvd_pid"], guard_pid):
        assert process_gone(pid)
    after = inventory(host)
    assert after["taps"] == [] and after["bridges"] == [] and after["vxlans"] == [] and after["networks"] == []
    assert all(vm["pid"] is None for vm in after["vms"])
    assert not after["ruleset"]["present"]
    assert not nft_table_exists(host, "bridge", "uncloud") and not nft_table_exists(host, "inet", "uncloud_sg")
    assert ok(host, "metadata-down")["changes"] == []  # already stopped
    assert disk.read_bytes() == b"customer data"

    again = ok(host, "host-down", hard=True)
    assert again == {"stopped_vms": [], "networks_down": [], "changes": []}
    # The guests can come back: vm-up after net-up starts the same VM again.
    ok(host, "net-up", **net_spec(110, PREFIX_A, host))
    assert ok(host, "vm-up", **vm_spec(VM_A, [nic("02:00:00:aa:0d:01", 110, PREFIX_A)], name="a"))["status"] == "running"
    ok(host, "host-down", hard=True)
