"""Images, disks and snapshots as RBD images in Ceph."""

import json

from .checks import (
    MAX_DISK_MIB,
    RBD_NAME_RE,
    check_bool,
    check_fields,
    check_int,
    check_path_under,
    check_state_dir,
    check_string,
)
from .errors import HostsideError, bad_spec
from .guests import qemu_processes_using, running_vm_drive
from .qmp import qmp_execute
from .system import COMMAND_TIMEOUT_S, command_failure, require_binaries, run_command

RBD_BASE_SNAPSHOT = "base"
RBD_IMPORT_TIMEOUT_S = 3600


def check_ceph_conf(value, state_dir):
    """ceph.conf of the cluster: a file below state_dir or below /etc/ceph (the admin's)."""
    if isinstance(value, str) and value.startswith("/etc/ceph/"):
        return check_path_under(value, "ceph_conf", "/etc/ceph")
    return check_path_under(value, "ceph_conf", state_dir)


def parse_rbd_target(spec, state_dir, name_field):
    pool = check_string(spec["pool"], "pool", RBD_NAME_RE, "letters, digits and ._- (at most 100)")
    name = check_string(spec[name_field], name_field, RBD_NAME_RE, "letters, digits and ._- (at most 100)")
    user = check_string(spec.get("user", "admin"), "user", RBD_NAME_RE, "a Ceph client id")
    return {"pool": pool, "name": name, "user": user, "conf": check_ceph_conf(spec["ceph_conf"], state_dir)}


def rbd_command(target, *args, timeout=COMMAND_TIMEOUT_S, check=True):
    return run_command(["rbd", "--conf", target["conf"], "--id", target["user"], *args], timeout=timeout,
                       check=check)


def rbd_spec_of(target, name=None):
    return f"{target['pool']}/{name or target['name']}"


def rbd_qemu_source(target, name=None):
    # qemu's rbd: syntax; the names and the path hold no ':' or ',' (checked above).
    return f"rbd:{rbd_spec_of(target, name)}:id={target['user']}:conf={target['conf']}"


def rbd_info(target, name=None):
    completed = rbd_command(target, "info", "--format", "json", rbd_spec_of(target, name), check=False)
    if completed.returncode != 0:
        if "No such file or directory" in completed.stderr:
            return None
        raise command_failure(["rbd", "info", rbd_spec_of(target, name)], completed)
    return json.loads(completed.stdout)


def rbd_snapshots(target, name=None):
    completed = rbd_command(target, "snap", "ls", "--format", "json", rbd_spec_of(target, name))
    return {snapshot["name"]: snapshot for snapshot in json.loads(completed.stdout or "[]")}


def rbd_images(target):
    completed = rbd_command(target, "ls", "--format", "json", target["pool"])
    return sorted(json.loads(completed.stdout or "[]"))


def parse_rbd_disk(disk, field, state_dir):
    """A vm-up disk in Ceph: {rbd: {pool, image, ceph_conf, user?}, format: raw, readonly?}."""
    check_fields(disk, ["rbd", "format"], ["readonly"])
    if disk["format"] != "raw":
        raise bad_spec(f"{field}.format must be raw for an rbd disk")
    source = disk["rbd"]
    check_fields(source, ["pool", "image", "ceph_conf"], ["user"])
    target = parse_rbd_target(source, state_dir, "image")
    return {"path": rbd_qemu_source(target), "format": "raw",
            "readonly": check_bool(disk.get("readonly", False), f"{field}.readonly")}


def verb_rbd_image_delete(spec):
    check_fields(spec, ["state_dir", "pool", "image", "ceph_conf"], ["user"])
    state_dir = check_state_dir(spec["state_dir"])
    target = parse_rbd_target(spec, state_dir, "image")
    require_binaries("rbd")
    changes = []
    if rbd_info(target) is not None:
        children = rbd_command(target, "children", "--format", "json",
                               f"{rbd_spec_of(target)}@{RBD_BASE_SNAPSHOT}", check=False)
        if children.returncode == 0 and json.loads(children.stdout or "[]"):
            raise HostsideError("in_use", f"disks are still clones of {rbd_spec_of(target)}",
                                details={"clones": json.loads(children.stdout)})
        if RBD_BASE_SNAPSHOT in rbd_snapshots(target):
            rbd_command(target, "snap", "unprotect", f"{rbd_spec_of(target)}@{RBD_BASE_SNAPSHOT}", check=False)
        rbd_command(target, "snap", "purge", rbd_spec_of(target))
        rbd_command(target, "rm", "--no-progress", rbd_spec_of(target))
        changes.append(f"removed {rbd_spec_of(target)}")
    # A lock left by an importer that died after its rename (rbd_import.py).
    rbd_command(target, "rm", "--no-progress", rbd_spec_of(target, f"{target['name']}.import-lock"), check=False)
    return {"changes": changes}


def verb_rbd_disk_ensure(spec):
    """A VM disk in the pool: a clone of <base>@base, or blank; grows (online via QMP when its
    VM runs), never shrinks. → the vm-up disk entry."""
    check_fields(spec, ["state_dir", "pool", "disk", "size_mib", "ceph_conf"], ["user", "base"])
    state_dir = check_state_dir(spec["state_dir"])
    target = parse_rbd_target(spec, state_dir, "disk")
    size_bytes = check_int(spec["size_mib"], "size_mib", 1, MAX_DISK_MIB) * 1024 * 1024
    base = spec.get("base")
    if base is not None:
        check_string(base, "base", RBD_NAME_RE, "an rbd image name")
    require_binaries("rbd")
    changes = []
    info = rbd_info(target)
    if info is None:
        if base is not None:
            base_info = rbd_info(target, base)
            if base_info is None:
                raise HostsideError("not_found", f"base {target['pool']}/{base} is not in the pool "
                                    "(rbd-image-ensure)")
            if base_info["size"] > size_bytes:
                raise bad_spec("size_mib is smaller than the base image")
            rbd_command(target, "clone", f"{rbd_spec_of(target, base)}@{RBD_BASE_SNAPSHOT}", rbd_spec_of(target))
            changes.append(f"cloned {rbd_spec_of(target)} from {base}")
        else:
            rbd_command(target, "create", "--size", f"{size_bytes // (1024 * 1024)}M", rbd_spec_of(target))
            changes.append(f"created {rbd_spec_of(target)}")
        info = rbd_info(target)
    if size_bytes < info["size"]:
        raise bad_spec(f"size_mib is smaller than the disk ({info['size']} bytes): disks never shrink")
    if size_bytes > info["size"]:
        rbd_command(target, "resize", "--no-progress", "--size", f"{size_bytes // (1024 * 1024)}M",
                    rbd_spec_of(target))
        running = running_vm_drive(state_dir, rbd_qemu_source(target))
        if running is not None:  # qemu caches the size: tell it, so the guest sees the new one
            qmp_execute(running[0], "block_resize", {**running[1], "size": size_bytes})
        changes.append(f"grew {rbd_spec_of(target)} to {size_bytes} bytes")
    source = {"pool": target["pool"], "image": target["name"], "ceph_conf": target["conf"], "user": target["user"]}
    return {"disk": {"rbd": source, "format": "raw"}, "source": rbd_qemu_source(target),
            "virtual_size_bytes": max(size_bytes, info["size"]), "changes": changes}


def verb_rbd_disk_delete(spec):
    check_fields(spec, ["state_dir", "pool", "disk", "ceph_conf"], ["user"])
    state_dir = check_state_dir(spec["state_dir"])
    target = parse_rbd_target(spec, state_dir, "disk")
    require_binaries("rbd")
    users = qemu_processes_using(state_dir, rbd_qemu_source(target))
    if users:
        raise HostsideError("in_use", f"{rbd_spec_of(target)} is open by a running VM", details={"pids": users})
    changes = []
    if rbd_info(target) is not None:
        for name, snapshot in rbd_snapshots(target).items():
            if snapshot.get("protected") == "true":
                rbd_command(target, "snap", "unprotect", f"{rbd_spec_of(target)}@{name}")
        rbd_command(target, "snap", "purge", "--no-progress", rbd_spec_of(target))
        rbd_command(target, "rm", "--no-progress", rbd_spec_of(target))
        changes.append(f"removed {rbd_spec_of(target)}")
    return {"changes": changes}


def parse_rbd_snapshot_spec(spec):
    """(target disk, snapshot name) of an rbd-snapshot or rbd-snapshot-delete spec."""
    check_fields(spec, ["state_dir", "pool", "disk", "snapshot", "ceph_conf"], ["user"])
    state_dir = check_state_dir(spec["state_dir"])
    target = parse_rbd_target(spec, state_dir, "disk")
    return target, check_string(spec["snapshot"], "snapshot", RBD_NAME_RE, "an rbd snapshot name")


def verb_rbd_snapshot(spec):
    """A snapshot of a disk (`rbd snap create`: crash-consistent, instantaneous)."""
    target, snapshot = parse_rbd_snapshot_spec(spec)
    require_binaries("rbd")
    if rbd_info(target) is None:
        raise HostsideError("not_found", f"{rbd_spec_of(target)} does not exist")
    changes = []
    if snapshot not in rbd_snapshots(target):
        rbd_command(target, "snap", "create", f"{rbd_spec_of(target)}@{snapshot}")
        changes.append(f"snapshot {rbd_spec_of(target)}@{snapshot}")
    size = rbd_snapshots(target)[snapshot]["size"]
    return {"path": f"{rbd_spec_of(target)}@{snapshot}", "virtual_size_bytes": size, "changes": changes}


def verb_rbd_snapshot_delete(spec):
    target, snapshot = parse_rbd_snapshot_spec(spec)
    require_binaries("rbd")
    changes = []
    if rbd_info(target) is not None and snapshot in rbd_snapshots(target):
        rbd_command(target, "snap", "rm", "--no-progress", f"{rbd_spec_of(target)}@{snapshot}")
        changes.append(f"removed {rbd_spec_of(target)}@{snapshot}")
    return {"changes": changes}


def verb_rbd_inventory(spec):
    check_fields(spec, ["state_dir", "pool", "ceph_conf"], ["user"])
    state_dir = check_state_dir(spec["state_dir"])
    target = parse_rbd_target({**spec, "image": "x"}, state_dir, "image")
    require_binaries("rbd")
    return {"pool": target["pool"], "images": rbd_images(target)}
