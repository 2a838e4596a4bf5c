"""The Ceph RBD verbs against a real single-node Ceph cluster (tests/lab/ceph.py): import a base
image once, clone a VM disk from its protected snapshot, boot qemu from `rbd:`, snapshot and grow
the disk while the VM runs, and delete everything without leaving an RBD image behind."""
import hashlib
import json
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hostside_testlib import block_nodes, devices_on_disk_ports, fails, hostside, ok, vm_spec

from tests.lab.ceph import POOL, ceph_cluster  # noqa: F401  (the session fixture)
from tests.lab.waiting import wait_for_line

demo_guest = pytest.importorskip("images.demo_guest")

VM_UUID = "9d000000-0000-4000-8000-000000000001"
HOTPLUG_VM_UUID = "9d000000-0000-4000-8000-00000000000b"
DATA_UUID = "9d000000-0000-4000-8000-00000000000c"
BOOT_TIMEOUT_S = 180


class CephHost:
    """The cluster's namespace as a hypervisor, shaped like the other hostside test hosts."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.netns = cluster.netns
        self.state_dir = cluster.state_dir

    def run(self, argv, input=None, timeout=60.0, check=True):
        return self.cluster.run(argv, input=input, timeout=timeout, check=check)

def base_on_host(host) -> tuple[str, str]:
    """The demo guest as a verified base file on the host (image-ensure, as the control plane ships
    it): (its sha256, the pool image name the control plane gives it)."""
    guest = demo_guest.build_demo_guest()
    sha = hashlib.sha256(Path(guest.disk_qcow2).read_bytes()).hexdigest()
    size = Path(guest.disk_qcow2).stat().st_size
    token = secrets.token_hex(8)
    shipped = ok(host, "image-ensure", sha256=sha, size_bytes=size, upload_token=token)
    if not shipped["present"]:  # the session's cluster host may have it from another test
        shutil.copyfile(guest.disk_qcow2, shipped["upload_path"])
        assert ok(host, "image-ensure", sha256=sha, size_bytes=size, upload_token=token)["present"]
    return sha, f"img-{sha[:24]}"


def test_rbd_import_clone_boot_snapshot_extend_delete(ceph_cluster):  # noqa: F811
    host = CephHost(ceph_cluster)
    conf = str(ceph_cluster.conf)
    sha, base_name = base_on_host(host)
    pool = {"pool": POOL, "ceph_conf": conf}
    imported = ok(host, "rbd-image-ensure", image=base_name, sha256=sha, **pool)
    assert imported["changes"] == [f"imported {POOL}/{base_name}"]
    assert ok(host, "rbd-image-ensure", image=base_name, sha256=sha, **pool)["changes"] == []  # once
    snapshots = json.loads(ceph_cluster.rbd("snap", "ls", "--format", "json", f"{POOL}/{base_name}"))
    assert [(s["name"], s["protected"]) for s in snapshots] == [("base", "true")]

    disk_name = f"disk-{VM_UUID}"
    disk = ok(host, "rbd-disk-ensure", disk=disk_name, base=base_name, size_mib=256, **pool)
    assert ok(host, "rbd-disk-ensure", disk=disk_name, base=base_name, size_mib=256, **pool)["changes"] == []
    assert '"parent"' in ceph_cluster.rbd("info", "--format", "json", f"{POOL}/{disk_name}")

    vm = ok(host, "vm-up", **vm_spec(VM_UUID, [], name="rbd-vm", memory_mib=256, disks=[disk["disk"]]))
    assert wait_for_line(vm["serial_log"], "UNCLOUD-BOOT", BOOT_TIMEOUT_S)
    wait_for_line(vm["serial_log"], "UNCLOUD-READY", BOOT_TIMEOUT_S)
    assert disk["source"] in Path(host.state_dir, "vms", VM_UUID, "spec.json").read_text()

    snapshot = ok(host, "rbd-snapshot", disk=disk_name, snapshot="snap-1", **pool)
    assert snapshot["path"] == f"{POOL}/{disk_name}@snap-1"
    grown = ok(host, "rbd-disk-ensure", disk=disk_name, base=base_name, size_mib=512, **pool)
    assert grown["virtual_size_bytes"] == 512 * 1024 * 1024
    assert json.loads(ceph_cluster.rbd("info", "--format", "json", f"{POOL}/{disk_name}"))["size"] == 512 * 1024**2
    in_use = fails(host, "rbd-disk-delete", {"state_dir": str(host.state_dir), "disk": disk_name, **pool},
                   "in_use")
    assert in_use["pids"] == [vm["pid"]]
    fails(host, "rbd-image-delete", {"state_dir": str(host.state_dir), "image": base_name, **pool}, "in_use")

    ok(host, "vm-down", uuid=VM_UUID, hard=True)
    assert ok(host, "rbd-disk-delete", disk=disk_name, **pool)["changes"]
    assert ok(host, "rbd-disk-delete", disk=disk_name, **pool)["changes"] == []
    assert ok(host, "rbd-image-delete", image=base_name, **pool)["changes"]
    assert ok(host, "rbd-inventory", **pool)["images"] == []
    assert ceph_cluster.rbd_images() == []


def test_rbd_names_cannot_escape(ceph_cluster):  # noqa: F811
    host = CephHost(ceph_cluster)
    spec = {"state_dir": str(host.state_dir), "pool": POOL, "ceph_conf": str(ceph_cluster.conf)}
    fails(host, "rbd-disk-ensure", {**spec, "disk": "a:conf=/etc/shadow", "size_mib": 1}, "bad_spec")
    fails(host, "rbd-disk-ensure", {**spec, "disk": "ok", "size_mib": 1, "ceph_conf": "/etc/shadow"}, "bad_spec")
    fails(host, "vm-up", {**vm_spec(VM_UUID, [], disks=[{"rbd": {"pool": POOL, "image": "x,file=/etc/shadow",
                                                                "ceph_conf": spec["ceph_conf"]},
                                                        "format": "raw"}]), "state_dir": spec["state_dir"]},
          "bad_spec")


def test_hot_attach_of_an_rbd_volume(ceph_cluster):  # noqa: F811
    """disk-attach/-detach (test_hostside_disk_hotplug.py) with a volume in Ceph instead of a file."""
    host = CephHost(ceph_cluster)
    state_dir = str(host.state_dir)
    pool = {"pool": POOL, "ceph_conf": str(ceph_cluster.conf)}
    guest = demo_guest.build_demo_guest()
    root = Path(state_dir) / "rbd-hotplug-root.qcow2"
    shutil.copyfile(guest.disk_qcow2, root)
    volume = ok(host, "rbd-disk-ensure", disk=f"disk-{DATA_UUID}", size_mib=32, **pool)
    rbd = {**pool, "image": f"disk-{DATA_UUID}"}
    vm = ok(host, "vm-up", **vm_spec(HOTPLUG_VM_UUID, [], memory_mib=256,
                                     disks=[{"path": str(root), "format": "qcow2"}]))
    try:
        wait_for_line(vm["serial_log"], "UNCLOUD-READY", BOOT_TIMEOUT_S)
        attached = ok(host, "disk-attach", uuid=HOTPLUG_VM_UUID, disk_uuid=DATA_UUID, rbd=rbd)
        assert devices_on_disk_ports(vm["qmp_socket"])["diskport0"] == [attached["device"]]
        (node,) = [name for name, entry in block_nodes(vm["qmp_socket"]).items()
                   if entry["inserted"]["drv"] == "raw" and f"disk-{DATA_UUID}" in entry["inserted"]["file"]]
        in_use = fails(host, "rbd-disk-delete", {"state_dir": state_dir, "disk": f"disk-{DATA_UUID}", **pool},
                       "in_use")
        assert in_use["pids"] == [vm["pid"]]
        ok(host, "rbd-disk-ensure", disk=f"disk-{DATA_UUID}", size_mib=64, **pool)
        assert int(block_nodes(vm["qmp_socket"])[node]["inserted"]["image"]["virtual-size"]) == 64 * 1024**2
        detached = ok(host, "disk-detach", uuid=HOTPLUG_VM_UUID, disk_uuid=DATA_UUID, rbd=rbd, timeout_s=60)
        assert f"closed {node}" in detached["changes"]
        assert devices_on_disk_ports(vm["qmp_socket"])["diskport0"] == []
        assert ok(host, "rbd-disk-delete", disk=f"disk-{DATA_UUID}", **pool)["changes"]
    finally:
        ok(host, "vm-down", uuid=HOTPLUG_VM_UUID, hard=True)
    assert volume["disk"]["rbd"]["image"] == f"disk-{DATA_UUID}"


def test_concurrent_first_imports_of_one_base_image_import_it_once(ceph_cluster):  # noqa: F811
    """Creates of several VMs from a new image meet here at once, from several workers and hosts:
    one imports, the others wait for it (rbd_import.py). Each caller clones its disk from the
    image as soon as its call returns: a half-made image (no protected `base` yet) fails the clone."""
    host = CephHost(ceph_cluster)
    conf = str(ceph_cluster.conf)
    sha, base_name = base_on_host(host)
    pool = {"pool": POOL, "ceph_conf": conf}
    callers = 4

    def first_create(index):
        status, answer = hostside(host, "rbd-image-ensure", {"state_dir": str(host.state_dir), "image": base_name,
                                                             "sha256": sha, **pool})
        if not answer["ok"]:
            return answer
        clone = hostside(host, "rbd-disk-ensure", {"state_dir": str(host.state_dir), "disk": f"disk-race-{index}",
                                                   "base": base_name, "size_mib": 256, **pool})[1]
        return {"ensure": answer, "clone": clone}

    with ThreadPoolExecutor(callers) as pool_of_callers:
        results = list(pool_of_callers.map(first_create, range(callers)))
    try:
        assert all("ensure" in result for result in results), results
        assert all(result["clone"]["ok"] for result in results), results
        imports = [result["ensure"]["result"]["changes"] for result in results]
        assert sorted(imports) == [[]] * (callers - 1) + [[f"imported {POOL}/{base_name}"]], imports
        # Nothing of the import is left beside the image: no lock, no temporary image.
        assert ceph_cluster.rbd_images() == sorted([base_name] + [f"disk-race-{i}" for i in range(callers)])
    finally:
        for index in range(callers):
            ok(host, "rbd-disk-delete", disk=f"disk-race-{index}", **pool)
        ok(host, "rbd-image-delete", image=base_name, **pool)
    assert ceph_cluster.rbd_images() == []


def test_an_import_left_by_a_dead_importer_is_taken_over(ceph_cluster):  # noqa: F811
    """An importer that died (its host killed mid-import) leaves its lock, unwatched, and its
    temporary image: after IMPORT_LOCK_STALE_S the next caller takes over and imports."""
    host = CephHost(ceph_cluster)
    pool = {"pool": POOL, "ceph_conf": str(ceph_cluster.conf)}
    sha, base_name = base_on_host(host)
    ceph_cluster.rbd("create", "--size", "1M", f"{POOL}/{base_name}.import-lock")
    ceph_cluster.rbd("create", "--size", "1M", f"{POOL}/{base_name}.importing-deadbeef")
    try:
        imported = ok(host, "rbd-image-ensure", image=base_name, sha256=sha, **pool)
        assert imported["changes"] == [f"imported {POOL}/{base_name}"]
        assert ceph_cluster.rbd_images() == [base_name]
    finally:
        ok(host, "rbd-image-delete", image=base_name, **pool)
        for leftover in ceph_cluster.rbd_images():
            ceph_cluster.rbd("rm", "--no-progress", f"{POOL}/{leftover}")
