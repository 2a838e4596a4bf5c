"""What runs on this host and what it holds open: qemu processes, their recorded disks, their
status."""

import os

from .paths import vm_paths, vms_dir
from .qmp import qmp_status
from .state import owned_process, process_cmdline, process_is_alive, read_json_file


def running_qemu(state_dir, vm_uuid):
    paths = vm_paths(state_dir, vm_uuid)
    return owned_process(paths["pid"], paths["qmp"])


def vm_status(state_dir, vm_uuid):
    paths = vm_paths(state_dir, vm_uuid)
    pid = running_qemu(state_dir, vm_uuid)
    if pid is None:
        return {"uuid": vm_uuid, "status": "stopped", "pid": None, "qmp_error": None}
    status, qmp_error = qmp_status(paths["qmp"])
    return {"uuid": vm_uuid, "status": status, "pid": pid, "qmp_error": qmp_error}


def processes_under_state_dir(state_dir):
    """(pid, argv) of live processes whose command line names a path below state_dir."""
    marker = state_dir + "/"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = process_cmdline(int(entry))
        if argv and any(marker in argument for argument in argv) and process_is_alive(int(entry)):
            found.append((int(entry), argv))
    return sorted(found)


def qemu_processes_using(state_dir, path):
    """pids of qemu processes of this host that have path open: on their command line, or
    plugged in later by disk-attach."""
    needle = f"file={path},"
    pids = [pid for pid, argv in processes_under_state_dir(state_dir)
            if os.path.basename(argv[0]).startswith("qemu-system") and any(needle in arg for arg in argv)]
    return sorted(set(pids + hot_disk_users(state_dir, path)))


def running_vm_drive(state_dir, path):
    """(qmp socket, block reference) of the running VM that has path open, or None. The reference
    names the drive as QMP's block commands take it: {"device": "disk<index>"} for a disk the VM
    started with, {"node-name": ...} for one plugged in later."""
    directory = vms_dir(state_dir)
    if not os.path.isdir(directory):
        return None
    for entry in sorted(os.listdir(directory)):
        recorded = read_json_file(vm_paths(state_dir, entry)["spec"]) or {}
        for index, disk in enumerate(recorded.get("disks", [])):
            if disk.get("path") == path and running_qemu(state_dir, entry) is not None:
                hotplug = disk.get("hotplug")
                reference = {"node-name": hotplug["node"]} if hotplug else {"device": f"disk{index}"}
                return vm_paths(state_dir, entry)["qmp"], reference
    return None


def recorded_disks(state_dir, vm_uuid):
    return (read_json_file(vm_paths(state_dir, vm_uuid)["spec"]) or {}).get("disks", [])


def hot_disk_users(state_dir, path):
    """pids of running VMs that have path plugged in by disk-attach."""
    directory = vms_dir(state_dir)
    pids = []
    for entry in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        for disk in recorded_disks(state_dir, entry):
            if disk.get("hotplug") and disk.get("path") == path:
                pid = running_qemu(state_dir, entry)
                if pid is not None:
                    pids.append(pid)
    return pids
