"""disk-attach / disk-detach: a data volume plugged into a running demo guest over QMP, grown and
snapshotted while plugged in, and taken out again; a guest that cannot answer the unplug leaves a
clear timeout. What the guest has is read back from qemu itself (query-pci, query-block)."""
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from hostside_testlib import block_nodes, devices_on_disk_ports, fails, ok, vm_spec

from tests.lab.qmp import qmp
from tests.lab.waiting import wait_for_line

demo_guest = pytest.importorskip("images.demo_guest")

VM_UUID = "9d000000-0000-4000-8000-00000000000a"
ROOT_UUID = "9d000000-0000-4000-8000-000000000001"
DATA_UUID = "9d000000-0000-4000-8000-000000000002"
COLD_UUID = "9d000000-0000-4000-8000-000000000003"
SNAPSHOT_UUID = "9d000000-0000-4000-8000-000000000004"
BOOT_TIMEOUT_S = 180


def test_hot_attach_grow_snapshot_detach(hosts):
    host = hosts[0]
    state_dir = str(host.state_dir)
    guest = demo_guest.build_demo_guest()
    base = Path(state_dir) / "base.qcow2"
    subprocess.run(["cp", guest.disk_qcow2, str(base)], check=True)
    root = Path(state_dir) / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(root)], check=True)
    cold = ok(host, "disk-ensure", disk_uuid=COLD_UUID, size_mib=16)
    data = ok(host, "disk-ensure", disk_uuid=DATA_UUID, size_mib=32)

    fails(host, "disk-attach", {"state_dir": state_dir, "uuid": VM_UUID, "disk_uuid": DATA_UUID}, "not_found")
    vm = ok(host, "vm-up", **vm_spec(VM_UUID, [], memory_mib=256, disks=[
        {"path": str(root), "format": "qcow2"}, {"path": cold["path"], "format": "qcow2"}]))
    qmp_socket = vm["qmp_socket"]
    wait_for_line(vm["serial_log"], "UNCLOUD-READY", BOOT_TIMEOUT_S)

    attached = ok(host, "disk-attach", uuid=VM_UUID, disk_uuid=DATA_UUID)
    assert attached["bus"] == "diskport0" and attached["changes"]
    assert devices_on_disk_ports(qmp_socket)["diskport0"] == [attached["device"]]
    nodes = block_nodes(qmp_socket)
    node = next(name for name, entry in nodes.items() if entry["inserted"]["file"] == data["path"])
    assert nodes[node]["qdev"].endswith(f"/{attached['device']}/virtio-backend")
    again = ok(host, "disk-attach", uuid=VM_UUID, disk_uuid=DATA_UUID)
    assert again["slot"] == 0 and again["changes"] == []
    assert ok(host, "disk-attach", uuid=VM_UUID, disk_uuid=COLD_UUID)["attached_at_boot"]
    recorded = json.loads((Path(state_dir) / "vms" / VM_UUID / "spec.json").read_text())
    assert [disk["path"] for disk in recorded["disks"]] == [str(root), cold["path"], data["path"]]

    # Plugged in, the disk counts as open: it is not deleted, it grows online, it is snapshotted live.
    fails(host, "disk-delete", {"state_dir": state_dir, "disk_uuid": DATA_UUID}, "in_use")
    grown = ok(host, "disk-ensure", disk_uuid=DATA_UUID, size_mib=48)
    assert grown["changes"] and "online" in grown["changes"][0]
    assert int(block_nodes(qmp_socket)[node]["inserted"]["image"]["virtual-size"]) == 48 * 1024 * 1024
    snapshot = ok(host, "disk-snapshot", disk_uuid=DATA_UUID, snapshot_uuid=SNAPSHOT_UUID)
    assert snapshot["virtual_size_bytes"] == 48 * 1024 * 1024

    error = fails(host, "disk-detach", {"state_dir": state_dir, "uuid": VM_UUID, "disk_uuid": COLD_UUID},
                  "not_hotpluggable")
    assert "stop the VM" in error["message"]
    fails(host, "disk-attach", {"state_dir": state_dir, "uuid": VM_UUID, "disk_uuid": "../../etc/shadow"},
          "bad_spec")

    # A paused guest cannot answer the unplug request: a timeout, the disk stays.
    qmp(qmp_socket, "stop")
    error = fails(host, "disk-detach", {"state_dir": state_dir, "uuid": VM_UUID, "disk_uuid": DATA_UUID,
                                        "timeout_s": 2}, "unplug_timeout")
    assert "did not release" in error["message"]
    assert node in block_nodes(qmp_socket)
    qmp(qmp_socket, "cont")

    detached = ok(host, "disk-detach", uuid=VM_UUID, disk_uuid=DATA_UUID, timeout_s=60)
    assert f"closed {node}" in detached["changes"]
    assert devices_on_disk_ports(qmp_socket)["diskport0"] == []
    assert node not in block_nodes(qmp_socket)
    assert ok(host, "disk-detach", uuid=VM_UUID, disk_uuid=DATA_UUID)["changes"] == []
    recorded = json.loads((Path(state_dir) / "vms" / VM_UUID / "spec.json").read_text())
    assert [disk["path"] for disk in recorded["disks"]] == [str(root), cold["path"]]
    assert ok(host, "disk-delete", disk_uuid=DATA_UUID)["changes"]
    assert qmp(qmp_socket, "query-status")["status"] == "running"

    ok(host, "vm-down", uuid=VM_UUID, hard=True)
    assert ok(host, "disk-detach", uuid=VM_UUID, disk_uuid=COLD_UUID)["changes"] == []
    ok(host, "snapshot-delete", snapshot_uuid=SNAPSHOT_UUID)
    ok(host, "disk-delete", disk_uuid=COLD_UUID)


def test_image_list_names_the_disks_of_each_base(lone_host, tmp_path):
    host = lone_host
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "8M"], check=True)
    sha = hashlib.sha256(base.read_bytes()).hexdigest()
    token = "00112233aabbccdd"
    answer = ok(host, "image-ensure", sha256=sha, size_bytes=base.stat().st_size, upload_token=token)
    subprocess.run(["cp", str(base), answer["upload_path"]], check=True)
    ok(host, "image-ensure", sha256=sha, size_bytes=base.stat().st_size, upload_token=token)
    ok(host, "disk-ensure", disk_uuid=DATA_UUID, size_mib=16, base_sha256=sha)
    listed = ok(host, "image-list")["images"]
    assert [(item["sha256"], item["disks"], item["size_bytes"]) for item in listed] == \
        [(sha, [DATA_UUID], base.stat().st_size)]
    ok(host, "disk-delete", disk_uuid=DATA_UUID)
    assert ok(host, "image-list")["images"][0]["disks"] == []
    ok(host, "image-delete", sha256=sha)
    assert ok(host, "image-list")["images"] == []

