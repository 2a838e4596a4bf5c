"""Images, disks and snapshots in files under state_dir (the layout is in paths.py)."""

import errno
import hashlib
import json
import os
import re
import time

from .checks import (
    MAX_DISK_MIB,
    SHA256_RE,
    check_fields,
    check_int,
    check_sha256,
    check_state_dir,
    check_string,
    check_uuid,
)
from .errors import HostsideError, bad_spec
from .guests import qemu_processes_using, running_vm_drive
from .paths import base_image_path, disk_path, disks_dir, images_dir, snapshot_path, upload_path
from .qcow2 import qcow2_virtual_size, write_qcow2
from .qmp import qmp_execute
from .state import ensure_directory, host_lock, read_json_file, remove_file, write_json_file
from .system import require_binaries, run_command

UPLOAD_TOKEN_RE = re.compile(r"^[0-9a-f]{8,32}$")

IMAGE_COMMAND_TIMEOUT_S = 3600  # copying or checksumming a large image takes a while


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def qemu_img_info(path, image_format="qcow2"):
    # Always an explicit format: qemu-img must never guess what a file is.
    completed = run_command(["qemu-img", "info", "-f", image_format, "--output=json", path],
                            timeout=IMAGE_COMMAND_TIMEOUT_S)
    return json.loads(completed.stdout)


def refuse_external_references(info, what):
    """A qcow2 we did not make ourselves may name files elsewhere on this host: never use it."""
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise HostsideError("bad_image", f"{what} names a backing file: refused")
    data_file = (info.get("format-specific") or {}).get("data", {}).get("data-file")
    if data_file:
        raise HostsideError("bad_image", f"{what} names an external data file: refused")


def block_name(reference):
    """The one name drive-backup and block jobs take (a drive id or a node name)."""
    return reference.get("device") or reference["node-name"]


def block_virtual_size(qmp_socket, reference):
    for entry in qmp_execute(qmp_socket, "query-block"):
        inserted = entry.get("inserted") or {}
        if entry.get("device") == reference.get("device") or inserted.get("node-name") == reference.get("node-name"):
            return int(inserted["image"]["virtual-size"])
    raise HostsideError("not_found", f"no drive {block_name(reference)} in the running VM")


def verb_image_ensure(spec):
    """Make a base image present, verified by its sha256. Without a finished upload the answer
    says where to upload (present: false); call again with the same token after uploading."""
    check_fields(spec, ["state_dir", "sha256", "size_bytes"], ["upload_token"])
    state_dir = check_state_dir(spec["state_dir"])
    sha256 = check_sha256(spec["sha256"])
    size_bytes = check_int(spec["size_bytes"], "size_bytes", 1, MAX_DISK_MIB * 1024 * 1024)
    token = spec.get("upload_token")
    if token is not None:
        check_string(token, "upload_token", UPLOAD_TOKEN_RE, "8 to 32 lowercase hex digits")
    final = base_image_path(state_dir, sha256)
    incoming = os.path.dirname(upload_path(state_dir, sha256, "x"))
    ensure_directory(incoming)
    changes = []
    if not os.path.isfile(final):
        if token is None:
            return {"present": False, "path": final, "upload_path": None, "changes": changes}
        upload = upload_path(state_dir, sha256, token)
        if not os.path.isfile(upload):
            return {"present": False, "path": final, "upload_path": upload, "changes": changes}
        require_binaries("qemu-img")
        actual_size = os.path.getsize(upload)
        actual_sha = file_sha256(upload)
        if actual_size != size_bytes or actual_sha != sha256:
            remove_file(upload)
            raise HostsideError("checksum_mismatch", f"the uploaded image has {actual_size} bytes and "
                                f"sha256 {actual_sha}, expected {size_bytes} bytes and {sha256}; removed")
        try:
            refuse_external_references(qemu_img_info(upload), "the uploaded image")
        except HostsideError:
            remove_file(upload)
            raise
        os.chmod(upload, 0o444)
        os.replace(upload, final)
        changes.append(f"imported {sha256}")
    elif os.path.getsize(final) != size_bytes:
        raise HostsideError("checksum_mismatch", f"{final} has {os.path.getsize(final)} bytes, expected "
                            f"{size_bytes}: remove it with image-delete")
    return {"present": True, "path": final, "upload_path": None, "changes": changes}


def disk_records(state_dir):
    directory = disks_dir(state_dir)
    if not os.path.isdir(directory):
        return []
    return [read_json_file(os.path.join(directory, entry)) or {}
            for entry in sorted(os.listdir(directory)) if entry.endswith(".json")]


def verb_image_delete(spec):
    check_fields(spec, ["state_dir", "sha256"])
    state_dir = check_state_dir(spec["state_dir"])
    sha256 = check_sha256(spec["sha256"])
    changes = []
    with host_lock(state_dir):
        users = sorted(record["uuid"] for record in disk_records(state_dir)
                       if record.get("base_sha256") == sha256)
        if users:
            raise HostsideError("in_use", f"disks still use base image {sha256}",
                                details={"disks": users})
        path = base_image_path(state_dir, sha256)
        if os.path.exists(path):
            remove_file(path)
            changes.append(f"removed {sha256}")
    return {"sha256": sha256, "changes": changes}


def disk_virtual_size(path):
    return int(qemu_img_info(path)["virtual-size"])


def base_virtual_size(path):
    """A base image's virtual size from its qcow2 header, without spawning qemu-img: image-ensure
    let only a file qemu-img reads as a qcow2 (and names nothing else) into the images directory."""
    size = qcow2_virtual_size(path)
    if size is None:
        raise HostsideError("bad_image", f"{path} is not a qcow2: remove it with image-delete")
    return size


def grow_disk(state_dir, path, size_bytes, changes):
    current = disk_virtual_size(path) if not qemu_processes_using(state_dir, path) else None
    running = running_vm_drive(state_dir, path)
    if running is not None:
        qmp_socket, reference = running
        current = block_virtual_size(qmp_socket, reference)
        if size_bytes > current:
            qmp_execute(qmp_socket, "block_resize", {**reference, "size": size_bytes})
            changes.append(f"grew {os.path.basename(path)} online to {size_bytes} bytes")
        return max(current, size_bytes)
    if current is None:
        raise HostsideError("in_use", f"{path} is open by a qemu this program did not start")
    if size_bytes < current:
        raise bad_spec(f"size_mib is smaller than the disk ({current} bytes): disks never shrink")
    if size_bytes > current:
        run_command(["qemu-img", "resize", "-f", "qcow2", path, str(size_bytes)])
        changes.append(f"grew {os.path.basename(path)} to {size_bytes} bytes")
    return size_bytes


def verb_disk_ensure(spec):
    """A VM disk: a qcow2 overlay of a base image (base_sha256) or a blank qcow2, at least
    size_mib large. An existing disk grows (online through QMP when its VM runs), never shrinks."""
    check_fields(spec, ["state_dir", "disk_uuid", "size_mib"], ["base_sha256"])
    state_dir = check_state_dir(spec["state_dir"])
    disk_uuid = check_uuid(spec["disk_uuid"])
    size_bytes = check_int(spec["size_mib"], "size_mib", 1, MAX_DISK_MIB) * 1024 * 1024
    base_sha = spec.get("base_sha256")
    base = None
    if base_sha is not None:
        base = base_image_path(state_dir, check_sha256(base_sha, "base_sha256"))
        if not os.path.isfile(base):
            raise HostsideError("not_found", f"base image {base_sha} is not on this host (image-ensure)")
    require_binaries("qemu-img")
    path = disk_path(state_dir, disk_uuid)
    changes = []
    with host_lock(state_dir):
        ensure_directory(disks_dir(state_dir))
        record_path = os.path.join(disks_dir(state_dir), f"{disk_uuid}.json")
        record = read_json_file(record_path)
        if record is not None and record.get("base_sha256") != base_sha and os.path.exists(path):
            raise HostsideError("in_use", f"disk {disk_uuid} exists with another base image "
                                f"({record.get('base_sha256')}); delete it first to rebuild")
        if not os.path.exists(path):
            # Written here rather than by `qemu-img create` (a ~15 ms spawn under the host lock): the
            # whole create is a few small writes and one fdatasync, so it stays under the lock, which
            # keeps the record, the fixed temporary name and image-delete's check of users in step.
            if base is not None and base_virtual_size(base) > size_bytes:
                raise bad_spec("size_mib is smaller than the base image's virtual size")
            temporary = path + ".tmp"
            try:
                write_json_file(record_path, {"uuid": disk_uuid, "base_sha256": base_sha})
                remove_file(temporary)
                write_qcow2(temporary, size_bytes, backing_file=base)
                os.replace(temporary, path)
            except BaseException as error:
                # A full disk (or any failure) leaves nothing half-made: no partial file, no record.
                remove_file(temporary)
                if record is None:
                    remove_file(record_path)
                if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise HostsideError("disk_full", f"writing {temporary} ran out of disk space: {error}") from None
                raise
            changes.append(f"created {os.path.basename(path)}")
            size = size_bytes
        else:
            size = grow_disk(state_dir, path, size_bytes, changes)
    return {"disk_uuid": disk_uuid, "path": path, "format": "qcow2", "virtual_size_bytes": size,
            "base_sha256": base_sha, "changes": changes}


def verb_disk_delete(spec):
    check_fields(spec, ["state_dir", "disk_uuid"])
    state_dir = check_state_dir(spec["state_dir"])
    disk_uuid = check_uuid(spec["disk_uuid"])
    path = disk_path(state_dir, disk_uuid)
    changes = []
    with host_lock(state_dir):
        users = qemu_processes_using(state_dir, path)
        if users:
            raise HostsideError("in_use", f"disk {disk_uuid} is open by a running VM",
                                details={"pids": users})
        for leftover in (path, path + ".tmp", os.path.join(disks_dir(state_dir), f"{disk_uuid}.json")):
            if os.path.exists(leftover):
                remove_file(leftover)
                changes.append(f"removed {os.path.basename(leftover)}")
    return {"disk_uuid": disk_uuid, "changes": changes}


def wait_for_block_job(qmp_socket, device, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = [job for job in qmp_execute(qmp_socket, "query-block-jobs") if job.get("device") == device]
        if not jobs:
            return
        time.sleep(0.1)
    raise HostsideError("timeout", f"the backup of {device} did not finish within {timeout_s} s")


def verb_disk_snapshot(spec):
    """A standalone, flattened qcow2 copy of a disk (crash-consistent when its VM runs: QMP
    drive-backup; a plain qemu-img convert when it does not). → path, sha256, size_bytes."""
    check_fields(spec, ["state_dir", "disk_uuid", "snapshot_uuid"])
    state_dir = check_state_dir(spec["state_dir"])
    disk_uuid = check_uuid(spec["disk_uuid"])
    snapshot_uuid = check_uuid(spec["snapshot_uuid"])
    require_binaries("qemu-img")
    source = disk_path(state_dir, disk_uuid)
    target = snapshot_path(state_dir, snapshot_uuid)
    changes = []
    if not os.path.isfile(target):
        if not os.path.isfile(source):
            raise HostsideError("not_found", f"disk {disk_uuid} is not on this host")
        ensure_directory(os.path.dirname(target))
        temporary = target + ".tmp"
        remove_file(temporary)
        running = running_vm_drive(state_dir, source)
        try:
            if running is not None:
                qmp_socket, drive = running[0], block_name(running[1])
                # The job id is named: a hot-plugged disk's node has no drive name to default to.
                qmp_execute(qmp_socket, "drive-backup", {"device": drive, "job-id": drive, "sync": "full",
                                                         "format": "qcow2", "target": temporary,
                                                         "mode": "absolute-paths"})
                wait_for_block_job(qmp_socket, drive, IMAGE_COMMAND_TIMEOUT_S)
            else:
                run_command(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", source, temporary],
                            timeout=IMAGE_COMMAND_TIMEOUT_S)
            refuse_external_references(qemu_img_info(temporary), "the snapshot")
        except HostsideError:
            remove_file(temporary)
            raise
        os.replace(temporary, target)
        changes.append(f"snapshot {snapshot_uuid} of {disk_uuid}")
    return {"snapshot_uuid": snapshot_uuid, "path": target, "sha256": file_sha256(target),
            "size_bytes": os.path.getsize(target), "virtual_size_bytes": disk_virtual_size(target),
            "changes": changes}


def verb_snapshot_delete(spec):
    check_fields(spec, ["state_dir", "snapshot_uuid"])
    state_dir = check_state_dir(spec["state_dir"])
    target = snapshot_path(state_dir, check_uuid(spec["snapshot_uuid"]))
    changes = []
    for leftover in (target, target + ".tmp"):
        if os.path.exists(leftover):
            remove_file(leftover)
            changes.append(f"removed {os.path.basename(leftover)}")
    return {"changes": changes}


def verb_image_list(spec):
    """The base images on this host with the disks (records) that are overlays of each: what a
    sweep of unused base images needs to know. Reads only."""
    check_fields(spec, ["state_dir"])
    state_dir = check_state_dir(spec["state_dir"])
    users = {}
    for record in disk_records(state_dir):
        if record.get("base_sha256"):
            users.setdefault(record["base_sha256"], []).append(record.get("uuid"))
    images = []
    directory = images_dir(state_dir)
    for entry in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        sha256, _, suffix = entry.partition(".")
        if suffix != "qcow2" or not SHA256_RE.match(sha256):
            continue
        stat = os.stat(os.path.join(directory, entry))
        images.append({"sha256": sha256, "size_bytes": stat.st_size, "modified": int(stat.st_mtime),
                       "disks": sorted(users.get(sha256, []))})
    return {"images": images}
