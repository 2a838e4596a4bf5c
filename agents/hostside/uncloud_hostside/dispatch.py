"""The verb table, running one verb, and batch: several verbs in one request."""

import errno
import time

from .checks import check_fields, check_list, check_state_dir
from .errors import HostsideError, bad_spec
from .exporter import verb_exporter_down, verb_exporter_up
from .ha import verb_ceph_blocklist, verb_heartbeat, verb_peer_probe, verb_rbd_watchers
from .hostdown import verb_host_down
from .hostinfo import verb_host_info
from .hotplug import verb_disk_attach, verb_disk_detach, verb_nic_attach, verb_nic_detach, verb_vm_firewall
from .inventory import verb_inventory
from .jump import verb_jump_sync
from .metadata import verb_metadata_down, verb_metadata_up, verb_vm_metadata, verb_vm_metadata_delete
from .metadata_server import verb_metadata_serve
from .migration import MIGRATION_VERBS
from .nat64 import verb_nat64_sync
from .net import verb_net_down, verb_net_up
from .proxy import verb_proxy_sync
from .rbd import (
    verb_rbd_disk_delete,
    verb_rbd_disk_ensure,
    verb_rbd_image_delete,
    verb_rbd_inventory,
    verb_rbd_snapshot,
    verb_rbd_snapshot_delete,
)
from .rbd_import import verb_rbd_image_ensure
from .recording import answer as recorded_answer
from .recording import is_recording
from .storage import (
    verb_disk_delete,
    verb_disk_ensure,
    verb_disk_snapshot,
    verb_image_delete,
    verb_image_ensure,
    verb_image_list,
    verb_snapshot_delete,
)
from .vm import verb_vm_down, verb_vm_reboot, verb_vm_status, verb_vm_up

MAX_BATCH_CALLS = 32
UNBATCHABLE_VERBS = ("batch", "metadata-serve")


def parse_batch_calls(calls):
    parsed = []
    for index, call in enumerate(check_list(calls, "calls", MAX_BATCH_CALLS)):
        check_fields(call, ["verb", "spec"])
        verb, spec = call["verb"], call["spec"]
        if verb not in VERBS or verb in UNBATCHABLE_VERBS:
            raise bad_spec(f"calls[{index}].verb: {verb!r} cannot be batched")
        if not isinstance(spec, dict):
            raise bad_spec(f"calls[{index}].spec must be a JSON object")
        parsed.append((verb, spec))
    return parsed


def verb_batch(spec):
    """Run the calls in order and stop at the first failure: a workflow step that needs several
    verbs pays one round trip. Each verb keeps its own checks, lock and idempotency, so a batch run
    again is as safe as its verbs run again. A failure is that verb's error plus batch_index,
    batch_verb and batch_results (the answers of the calls before it)."""
    check_fields(spec, ["state_dir", "calls"])
    state_dir = check_state_dir(spec["state_dir"])
    calls = parse_batch_calls(spec["calls"])  # all checked before any runs
    results, elapsed_ms = [], []
    for index, (verb, call_spec) in enumerate(calls):
        started = time.perf_counter()
        try:
            results.append(run_verb(verb, {"state_dir": state_dir, **call_spec}))
        except HostsideError as error:
            error.details = {**error.details, "batch_index": index, "batch_verb": verb,
                             "batch_results": results}
            raise
        elapsed_ms.append(round((time.perf_counter() - started) * 1000, 1))
    return {"results": results, "elapsed_ms": elapsed_ms}


VERBS = {
    "host-info": verb_host_info,
    "host-down": verb_host_down,
    "batch": verb_batch,
    "net-up": verb_net_up,
    "net-down": verb_net_down,
    "vm-up": verb_vm_up,
    "vm-down": verb_vm_down,
    "vm-status": verb_vm_status,
    "vm-reboot": verb_vm_reboot,
    "vm-firewall": verb_vm_firewall,
    "nic-attach": verb_nic_attach,
    "nic-detach": verb_nic_detach,
    "nat64-sync": verb_nat64_sync,
    # the shared IPv4 proxy and SSH jump host of a proxy host
    "proxy-sync": verb_proxy_sync,
    "jump-sync": verb_jump_sync,
    "inventory": verb_inventory,
    # images, disks, snapshots, config drives, the metadata service
    "image-ensure": verb_image_ensure,
    "image-delete": verb_image_delete,
    "disk-ensure": verb_disk_ensure,
    "disk-delete": verb_disk_delete,
    "disk-snapshot": verb_disk_snapshot,
    "snapshot-delete": verb_snapshot_delete,
    "image-list": verb_image_list,
    "disk-attach": verb_disk_attach,
    "disk-detach": verb_disk_detach,
    "vm-metadata": verb_vm_metadata,
    "vm-metadata-delete": verb_vm_metadata_delete,
    "metadata-up": verb_metadata_up,
    "metadata-down": verb_metadata_down,
    "metadata-serve": verb_metadata_serve,
    "rbd-image-ensure": verb_rbd_image_ensure,
    "rbd-image-delete": verb_rbd_image_delete,
    "rbd-disk-ensure": verb_rbd_disk_ensure,
    "rbd-disk-delete": verb_rbd_disk_delete,
    "rbd-snapshot": verb_rbd_snapshot,
    "rbd-snapshot-delete": verb_rbd_snapshot_delete,
    "rbd-inventory": verb_rbd_inventory,
    # live migration (migration.py)
    **MIGRATION_VERBS,
    # high availability (ha.py)
    "heartbeat": verb_heartbeat,
    "peer-probe": verb_peer_probe,
    "ceph-blocklist": verb_ceph_blocklist,
    "rbd-watchers": verb_rbd_watchers,
    # the Prometheus exporter (exporter.py)
    "exporter-up": verb_exporter_up,
    "exporter-down": verb_exporter_down,
}


def run_verb(verb, spec):
    if verb not in VERBS:
        raise bad_spec(f"unknown verb {verb!r}; verbs: {', '.join(VERBS)}")
    if verb != "batch" and isinstance(spec, dict) and is_recording(spec.get("state_dir")):
        return recorded_answer(verb, spec)  # a recording host (recording.py): a batch's verbs record one by one
    try:
        return VERBS[verb](spec)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise HostsideError("disk_full", f"no space left: {error}") from None
        raise HostsideError("command_failed", f"{type(error).__name__}: {error}") from None
