"""A base image imported into Ceph once, however many hosts and workers ask for it at the same time.

The pool is shared by every host, so a lock file on one host proves nothing: the lock lives in Ceph.

- The image's final name only ever appears complete: the data goes to a temporary image of this
  importer's own (`<name>.importing-<token>`), gets its protected snapshot `base`, and is renamed
  to `<name>` last (a rename to a name that exists fails). So an image under the final name with
  its `base` snapshot is a complete import; one without it is a crashed import of older code.
- One import at a time per image: the importer first creates `<name>.import-lock` (creating an
  image that exists fails, atomically in the cluster) and holds a watch on it (`rbd watch`, which
  ends with this process: its stdin is our pipe). The others wait for the final name to appear.
- A lock nobody watches for IMPORT_LOCK_STALE_S belongs to an importer that died (a watch of a
  dead host expires after 30 s): it is removed and the next waiter imports. Taking over a live
  importer by mistake costs a second import, never a half-made image: each importer renames only
  its own complete temporary image, and a rename onto an existing image fails.
"""

import json
import os
import secrets
import select
import subprocess
import time

from .checks import check_fields, check_sha256, check_state_dir
from .errors import HostsideError
from .paths import base_image_path
from .rbd import RBD_BASE_SNAPSHOT, RBD_IMPORT_TIMEOUT_S, parse_rbd_target, rbd_command
from .rbd import rbd_qemu_source as qemu_source
from .rbd import rbd_spec_of as spec_of
from .system import command_failure, find_binary, require_binaries, run_command

IMPORT_LOCK_SUFFIX = ".import-lock"
IMPORT_TEMP_SUFFIX = ".importing"  # + "-<token>"; the bare suffix was older code's only name
IMPORT_LOCK_STALE_S = 20
IMPORT_POLL_S = 0.5
WATCH_READY_S = 10


def image_snapshots(target, name=None):
    """{snapshot name: snapshot} of the image, or None when there is no such image."""
    completed = rbd_command(target, "snap", "ls", "--format", "json", spec_of(target, name), check=False)
    if completed.returncode != 0:
        if "No such file or directory" in completed.stderr:
            return None
        raise command_failure(["rbd", "snap", "ls", spec_of(target, name)], completed)
    return {snapshot["name"]: snapshot for snapshot in json.loads(completed.stdout or "[]")}


def is_complete(target) -> bool:
    snapshots = image_snapshots(target)
    return snapshots is not None and snapshots.get(RBD_BASE_SNAPSHOT, {}).get("protected") == "true"


def watchers(target, name) -> list | None:
    """Who holds the image open or watched; None when there is no such image."""
    completed = rbd_command(target, "status", "--format", "json", spec_of(target, name), check=False)
    if completed.returncode != 0:
        if "No such file or directory" in completed.stderr:
            return None
        return []
    return json.loads(completed.stdout or "{}").get("watchers", [])


def remove_image(target, name) -> None:
    """Best effort: an image someone holds open (a live importer's) refuses and stays."""
    snapshots = image_snapshots(target, name) or {}
    for snapshot, details in snapshots.items():
        if details.get("protected") == "true":
            rbd_command(target, "snap", "unprotect", f"{spec_of(target, name)}@{snapshot}", check=False)
    if snapshots:
        rbd_command(target, "snap", "purge", "--no-progress", spec_of(target, name), check=False)
    rbd_command(target, "rm", "--no-progress", spec_of(target, name), check=False)


class ImportLock:
    """`<name>.import-lock` in the pool, watched by an `rbd watch` child while we hold it."""

    def __init__(self, target):
        self.target = target
        self.name = target["name"] + IMPORT_LOCK_SUFFIX
        self.watch = None

    def acquire(self) -> bool:
        completed = rbd_command(self.target, "create", "--size", "1M", spec_of(self.target, self.name), check=False)
        if completed.returncode != 0:
            if "File exists" in completed.stderr:
                return False
            raise command_failure(["rbd", "create", spec_of(self.target, self.name)], completed)
        binary = find_binary("rbd")
        self.watch = subprocess.Popen(
            [binary, "--conf", self.target["conf"], "--id", self.target["user"], "watch",
             spec_of(self.target, self.name)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        # It prints its prompt once the watch is registered: from then on the others see us alive.
        select.select([self.watch.stdout], [], [], WATCH_READY_S)
        return True

    def release(self) -> None:
        if self.watch is not None:
            self.watch.stdin.close()  # `rbd watch` ends at the end of its input, unwatching
            try:
                self.watch.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.watch.kill()
                self.watch.wait()
            self.watch.stdout.close()
        rbd_command(self.target, "rm", "--no-progress", spec_of(self.target, self.name), check=False)


def import_under_lock(target, base_file) -> list[str]:
    snapshots = image_snapshots(target)
    if snapshots is not None:
        if snapshots.get(RBD_BASE_SNAPSHOT, {}).get("protected") == "true":
            return []  # the importer before us finished after we looked
        remove_image(target, target["name"])  # older code's crashed import: no snapshot yet
    images = json.loads(rbd_command(target, "ls", "--format", "json", target["pool"]).stdout or "[]")
    for name in images:  # temporary images of importers that died (a live one's refuses removal)
        if name.startswith(target["name"] + IMPORT_TEMP_SUFFIX):
            remove_image(target, name)
    temporary = f"{target['name']}{IMPORT_TEMP_SUFFIX}-{secrets.token_hex(4)}"
    run_command(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", base_file, qemu_source(target, temporary)],
                timeout=RBD_IMPORT_TIMEOUT_S)
    rbd_command(target, "snap", "create", f"{spec_of(target, temporary)}@{RBD_BASE_SNAPSHOT}")
    rbd_command(target, "snap", "protect", f"{spec_of(target, temporary)}@{RBD_BASE_SNAPSHOT}")
    renamed = rbd_command(target, "rename", spec_of(target, temporary), spec_of(target), check=False)
    if renamed.returncode != 0:
        remove_image(target, temporary)
        if is_complete(target):  # an importer that took our lock for dead finished first
            return []
        raise command_failure(["rbd", "rename", spec_of(target, temporary), spec_of(target)], renamed)
    return [f"imported {spec_of(target)}"]


def ensure_imported(target, base_file) -> list[str]:
    """The base image `target` complete in the pool; the changes made (empty when it was there or
    another importer made it meanwhile)."""
    deadline = time.monotonic() + RBD_IMPORT_TIMEOUT_S
    unwatched_since = None
    lock = ImportLock(target)
    while True:
        if is_complete(target):
            return []
        if not os.path.isfile(base_file):
            raise HostsideError("not_found", f"base image {os.path.basename(base_file)} is not on this host "
                                "(image-ensure)")
        if lock.acquire():
            try:
                return import_under_lock(target, base_file)
            finally:
                lock.release()
        held_by = watchers(target, lock.name)
        if held_by:
            unwatched_since = None
        elif unwatched_since is None:
            unwatched_since = time.monotonic()
        elif time.monotonic() - unwatched_since > IMPORT_LOCK_STALE_S:
            rbd_command(target, "rm", "--no-progress", spec_of(target, lock.name), check=False)
            unwatched_since = None
        if time.monotonic() > deadline:
            raise HostsideError("timeout", f"{spec_of(target)} was still being imported by another host after "
                                f"{RBD_IMPORT_TIMEOUT_S} s")
        time.sleep(IMPORT_POLL_S)


def verb_rbd_image_ensure(spec):
    """A base image in the pool, once per checksum: <name> with the protected snapshot `base`,
    converted from the verified local base file (image-ensure first) by qemu-img."""
    check_fields(spec, ["state_dir", "pool", "image", "sha256", "ceph_conf"], ["user"])
    state_dir = check_state_dir(spec["state_dir"])
    target = parse_rbd_target(spec, state_dir, "image")
    base_file = base_image_path(state_dir, check_sha256(spec["sha256"]))
    require_binaries("rbd", "qemu-img")
    changes = ensure_imported(target, base_file)
    return {"image": spec_of(target), "snapshot": RBD_BASE_SNAPSHOT, "changes": changes}
