"""vm-firewall / nic-attach / nic-detach and disk-attach / disk-detach: a running guest's ports and
disks change without a restart.

A hot-plugged disk is a blockdev node (`blockdev-add`) under a virtio-blk-pci device on one of
the spare root ports diskport0..7 that vm-up gives every guest. The VM's recorded spec lists it
with a "hotplug" entry, so the other verbs (disk-delete, disk-ensure's online resize,
disk-snapshot) know it is open. Disks a VM was started with sit on the root bus and stay until
it stops; its next vm-up builds them all from the control plane's list again.
"""

import contextlib
import os
import time

from .addressing import derived_tap_name
from .checks import check_fields, check_int, check_number, check_state_dir, check_uuid
from .errors import HostsideError, bad_spec
from .guests import qemu_processes_using, recorded_disks, running_qemu
from .nft import apply_ruleset, load_port_states, parse_ingress_rules
from .paths import disk_path, port_state_path, vm_paths
from .qmp import qmp_execute, qmp_run, qmp_unplug_device
from .rbd import parse_rbd_target, rbd_qemu_source
from .state import host_lock, read_json_file, write_json_file
from .system import require_binaries
from .vm import ensure_taps, record_ports, remove_port, require_networks_up
from .vmspec import MAX_HOTPLUG_DISKS, MAX_NICS, disk_port_id, nic_port_id, parse_nic


def verb_vm_firewall(spec):
    """Replace the ingress rules of every port of a VM; the whole table swaps in one nft
    transaction, so no packet ever sees half a rule set. A VM with no ports here gets its rules
    with its next vm-up (the spec carries them)."""
    check_fields(spec, ["state_dir", "uuid", "ingress"])
    state_dir = check_state_dir(spec["state_dir"])
    vm_uuid = check_uuid(spec["uuid"])
    rules = parse_ingress_rules(spec["ingress"], "ingress")
    require_binaries("nft")
    with host_lock(state_dir):
        ports = [port for port in load_port_states(state_dir) if port["vm_uuid"] == vm_uuid]
        for port in ports:
            port["security_group_ingress"] = rules
            write_json_file(port_state_path(state_dir, port["tap"]), port)
        applied = apply_ruleset(state_dir)
    return {"uuid": vm_uuid, "ports": [port["tap"] for port in ports], "rules": len(rules),
            "applied": applied}


def peripheral_ids(qmp_socket):
    return {item["name"] for item in qmp_execute(qmp_socket, "qom-list", {"path": "/machine/peripheral"})}


def remember_nic(state_dir, vm_uuid, nic, present):
    """Keep the VM's recorded spec in line with its plugged NICs (vm-down and inventory read it)."""
    path = vm_paths(state_dir, vm_uuid)["spec"]
    recorded = read_json_file(path)
    if recorded is None:
        return
    nics = [known for known in recorded.get("nics", []) if known.get("index") != nic["index"]
            and known.get("tap") != nic["tap"]]
    if present:
        nics.append({key: nic[key] for key in ("mac", "vni", "ipv6", "tap", "index", "link_local")})
    recorded["nics"] = sorted(nics, key=lambda known: known.get("index", 0))
    write_json_file(path, recorded)


def parse_nic_change_spec(spec, required):
    check_fields(spec, ["state_dir", "uuid", *required], ["timeout_s"])
    state_dir = check_state_dir(spec["state_dir"])
    vm_uuid = check_uuid(spec["uuid"])
    timeout_s = check_number(spec.get("timeout_s", 30), "timeout_s", 1, 600)
    return state_dir, vm_uuid, timeout_s


def verb_nic_attach(spec):
    state_dir, vm_uuid, _ = parse_nic_change_spec(spec, ["nic"])
    if not isinstance(spec["nic"], dict) or "index" not in spec["nic"]:
        raise bad_spec("nic must be an object with an index")
    nic = parse_nic(spec["nic"], spec["nic"]["index"], vm_uuid, state_dir)
    vm = {"state_dir": state_dir, "uuid": vm_uuid, "nics": [nic]}
    require_binaries("ip", "nft")
    qmp_socket = vm_paths(state_dir, vm_uuid)["qmp"]
    with host_lock(state_dir):
        if running_qemu(state_dir, vm_uuid) is None:
            raise HostsideError("not_found", f"VM {vm_uuid} is not running on this host")
        require_networks_up(vm)
        changes = []
        # The port's guard is in place before the guest sees the device.
        record_ports(vm)
        ensure_taps([nic], changes)
        if apply_ruleset(state_dir):
            changes.append("applied nft rules")
        device_id = f"nic{nic['index']}"
        if device_id not in peripheral_ids(qmp_socket):
            commands = [("netdev_add", {"type": "tap", "id": f"net{nic['index']}", "ifname": nic["tap"],
                                        "script": "no", "downscript": "no"}),
                        ("device_add", {"driver": "virtio-net-pci", "id": device_id,
                                        "netdev": f"net{nic['index']}", "mac": nic["mac"], "romfile": "",
                                        "bus": nic_port_id(nic["index"])})]
            try:
                qmp_run(qmp_socket, commands)
            except HostsideError as error:
                if "Duplicate" not in error.message:
                    raise
                # A netdev left by an earlier try that died before device_add: plug the device.
                qmp_run(qmp_socket, commands[1:])
            changes.append(f"plugged {device_id}")
        remember_nic(state_dir, vm_uuid, nic, present=True)
    return {"uuid": vm_uuid, "tap": nic["tap"], "device": device_id, "changes": changes}


def verb_nic_detach(spec):
    state_dir, vm_uuid, timeout_s = parse_nic_change_spec(spec, ["index"])
    index = check_int(spec["index"], "index", 0, MAX_NICS - 1)
    tap = derived_tap_name(vm_uuid, index)
    require_binaries("ip", "nft")
    qmp_socket = vm_paths(state_dir, vm_uuid)["qmp"]
    changes = []
    # The guest's answer takes seconds: wait outside the host lock.
    if running_qemu(state_dir, vm_uuid) is not None:
        if qmp_unplug_device(qmp_socket, f"nic{index}", timeout_s) == "removed":
            changes.append(f"unplugged nic{index}")
        with contextlib.suppress(HostsideError):  # gone with its device, or never there
            qmp_execute(qmp_socket, "netdev_del", {"id": f"net{index}"})
    with host_lock(state_dir):
        remove_port(state_dir, tap, changes)
        if apply_ruleset(state_dir):
            changes.append("applied nft rules")
        remember_nic(state_dir, vm_uuid, {"index": index, "tap": tap}, present=False)
    return {"uuid": vm_uuid, "tap": tap, "changes": changes}


def hot_disk_names(disk_uuid):
    compact = disk_uuid.replace("-", "")
    # Node names have at most 31 characters; device ids have no such limit.
    return f"vd-{disk_uuid}", f"vdn-{compact[:24]}"


def parse_disk_plug_spec(spec):
    """(state_dir, vm uuid, disk uuid, qemu path, blockdev options, timeout) of disk-attach/-detach.
    A local disk is named by its uuid only (the verb finds its file): no spec can plug in any other
    file of the host, a base image included."""
    check_fields(spec, ["state_dir", "uuid", "disk_uuid"], ["rbd", "timeout_s"])
    state_dir = check_state_dir(spec["state_dir"])
    vm_uuid = check_uuid(spec["uuid"])
    disk_uuid = check_uuid(spec["disk_uuid"])
    timeout_s = check_number(spec.get("timeout_s", 30), "timeout_s", 1, 600)
    if spec.get("rbd") is not None:
        source = spec["rbd"]
        check_fields(source, ["pool", "image", "ceph_conf"], ["user"])
        target = parse_rbd_target(source, state_dir, "image")
        path = rbd_qemu_source(target)
        options = {"driver": "raw", "file": {"driver": "rbd", "pool": target["pool"], "image": target["name"],
                                             "conf": target["conf"], "user": target["user"]}}
    else:
        path = disk_path(state_dir, disk_uuid)
        options = {"driver": "qcow2", "file": {"driver": "file", "filename": path}}
    return state_dir, vm_uuid, disk_uuid, path, options, timeout_s


def remember_hot_disk(state_dir, vm_uuid, disk_uuid, entry):
    """Add (entry) or drop (None) the VM's hot-plugged disk in its recorded spec."""
    path = vm_paths(state_dir, vm_uuid)["spec"]
    recorded = read_json_file(path)
    if recorded is None:
        return
    disks = [disk for disk in recorded.get("disks", [])
             if (disk.get("hotplug") or {}).get("disk_uuid") != disk_uuid]
    if entry is not None:
        disks.append(entry)
    recorded["disks"] = disks
    write_json_file(path, recorded)


def disk_ports_in_use(qmp_socket):
    """{slot: qdev id of the device on it} for the diskport root ports of a running guest."""
    used = {}
    ports = {disk_port_id(slot): slot for slot in range(MAX_HOTPLUG_DISKS)}
    for bus in qmp_execute(qmp_socket, "query-pci"):
        for device in bus.get("devices", []):
            if device.get("qdev_id") in ports:
                children = (device.get("pci_bridge") or {}).get("devices") or []
                if children:
                    used[ports[device["qdev_id"]]] = children[0].get("qdev_id", "")
    return used


def close_block_node(qmp_socket, node_name, timeout_s=5):
    """blockdev-del. qemu lets go of a node a moment after the device that used it is gone (and
    after a finished block job is cleaned up), so "in use" is asked again for a short while."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return qmp_execute(qmp_socket, "blockdev-del", {"node-name": node_name})
        except HostsideError as error:
            if "is in use" not in error.message or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def block_node_names(qmp_socket):
    return {node.get("node-name") for node in qmp_execute(qmp_socket, "query-named-block-nodes",
                                                          {"flat": True})}


def verb_disk_attach(spec):
    """Plug a disk into a running guest: blockdev-add, then device_add virtio-blk-pci on a free
    diskport. Attaching what is attached already answers the same. → device, slot, changes."""
    state_dir, vm_uuid, disk_uuid, path, options, _ = parse_disk_plug_spec(spec)
    device_id, node_name = hot_disk_names(disk_uuid)
    qmp_socket = vm_paths(state_dir, vm_uuid)["qmp"]
    changes = []
    with host_lock(state_dir):
        pid = running_qemu(state_dir, vm_uuid)
        if pid is None:
            raise HostsideError("not_found", f"VM {vm_uuid} is not running on this host")
        if options["file"]["driver"] == "file" and not os.path.isfile(path):
            raise HostsideError("not_found", f"disk {disk_uuid} is not on this host (disk-ensure first)")
        if any(disk.get("path") == path and not disk.get("hotplug") for disk in recorded_disks(state_dir, vm_uuid)):
            return {"uuid": vm_uuid, "disk_uuid": disk_uuid, "device": None, "slot": None,
                    "attached_at_boot": True, "changes": changes}
        others = [user for user in qemu_processes_using(state_dir, path) if user != pid]
        if others:
            raise HostsideError("in_use", f"disk {disk_uuid} is open by another VM", details={"pids": others})
        used = disk_ports_in_use(qmp_socket)
        slot = next((slot for slot, device in used.items() if device == device_id), None)
        if slot is None:
            slot = next((slot for slot in range(MAX_HOTPLUG_DISKS) if slot not in used), None)
            if slot is None:
                raise HostsideError("no_free_port", f"all {MAX_HOTPLUG_DISKS} hot-plug ports of the VM are "
                                    "taken; stop the VM to attach more disks")
            added_node = node_name not in block_node_names(qmp_socket)
            if added_node:
                qmp_execute(qmp_socket, "blockdev-add", {**options, "node-name": node_name})
            try:
                qmp_execute(qmp_socket, "device_add", {"driver": "virtio-blk-pci", "id": device_id,
                                                       "drive": node_name, "bus": disk_port_id(slot)})
            except HostsideError:
                if added_node:
                    with contextlib.suppress(HostsideError):
                        qmp_execute(qmp_socket, "blockdev-del", {"node-name": node_name})
                raise
            changes.append(f"plugged {device_id} into {disk_port_id(slot)}")
        remember_hot_disk(state_dir, vm_uuid, disk_uuid, {
            "path": path, "format": options["driver"], "readonly": False,
            "hotplug": {"disk_uuid": disk_uuid, "slot": slot, "device": device_id, "node": node_name}})
    return {"uuid": vm_uuid, "disk_uuid": disk_uuid, "device": device_id, "slot": slot,
            "bus": disk_port_id(slot), "attached_at_boot": False, "changes": changes}


def verb_disk_detach(spec):
    """Take a hot-plugged disk out of a running guest: device_del, wait until the guest lets go
    (timeout_s), blockdev-del. A disk the VM was started with cannot leave while it runs
    (not_hotpluggable); a VM that does not run has nothing plugged in."""
    state_dir, vm_uuid, disk_uuid, path, _, timeout_s = parse_disk_plug_spec(spec)
    device_id, node_name = hot_disk_names(disk_uuid)
    qmp_socket = vm_paths(state_dir, vm_uuid)["qmp"]
    changes = []
    if running_qemu(state_dir, vm_uuid) is not None:
        hot = any((disk.get("hotplug") or {}).get("disk_uuid") == disk_uuid
                  for disk in recorded_disks(state_dir, vm_uuid))
        if not hot and any(disk.get("path") == path for disk in recorded_disks(state_dir, vm_uuid)):
            raise HostsideError("not_hotpluggable", f"disk {disk_uuid} was attached when the VM started and "
                                "sits on a bus without hot-unplug; stop the VM to detach it")
        # The guest's answer takes seconds: wait outside the host lock, as vm-down does.
        try:
            if qmp_unplug_device(qmp_socket, device_id, timeout_s) == "removed":
                changes.append(f"unplugged {device_id}")
        except HostsideError as error:
            if error.code != "timeout":
                raise
            # Not "timeout": that one is retried, and a guest that ignored the request once
            # (paused, hung, no hot-plug driver) is not helped by asking again at once.
            raise HostsideError("unplug_timeout", f"{error.message}; disk {disk_uuid} stays attached") from None
    with host_lock(state_dir):
        if running_qemu(state_dir, vm_uuid) is not None and node_name in block_node_names(qmp_socket):
            close_block_node(qmp_socket, node_name)
            changes.append(f"closed {node_name}")
        remember_hot_disk(state_dir, vm_uuid, disk_uuid, None)
    return {"uuid": vm_uuid, "disk_uuid": disk_uuid, "device": device_id, "changes": changes}
