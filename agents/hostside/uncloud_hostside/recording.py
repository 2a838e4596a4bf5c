"""A recording host: the program answers every verb as it would on success and appends the request
to <state_dir>/recorded-verbs.jsonl instead of running it (no qemu, no links, no files but the log).

For benchmarks of the control plane at a size no test machine can host: 50 hypervisors each
booting guests do not fit on 2 cores, yet placement, the queue, the workers, the SSH-less transport
and this program's serve loop and batch are what is measured, and they all run for real. A host
is a recording one when its state dir holds the file `record-verbs` (put there by whoever sets it
up: bench/placement.py); nothing else turns it on, and a real host never has that file.

Recorded VMs count as running from their vm-up to their vm-down, so vm-status and inventory
answer like a host that ran them. A marker holding {"verb_delay_s": 2} makes a slow host: each verb
answers that much later (a benchmark's host that holds workers, bench/placement.py --slow-host). Each line of the log is one verb: {"t", "pid", "verb", "spec"}.
"""

import json
import os
import time

from .checks import check_state_dir
from .paths import disk_path, recording_paths, vm_metadata_paths


def is_recording(state_dir):
    return isinstance(state_dir, str) and os.path.isfile(recording_paths(state_dir)["marker"])


def record(state_dir, verb, spec):
    line = json.dumps({"t": time.time(), "pid": os.getpid(), "verb": verb, "spec": spec}, sort_keys=True) + "\n"
    # One write of one line with O_APPEND: several serve processes may record on this host at once.
    descriptor = os.open(recording_paths(state_dir)["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)


def recorded(state_dir):
    """Every recorded verb of this host, oldest first."""
    try:
        with open(recording_paths(state_dir)["log"]) as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def running_vms(state_dir):
    running = {}
    for entry in recorded(state_dir):
        if entry["verb"] == "vm-up":
            running[entry["spec"]["uuid"]] = entry["spec"]
        elif entry["verb"] == "vm-down":
            running.pop(entry["spec"].get("uuid"), None)
    return running


def _vm_status(state_dir, spec):
    vm = running_vms(state_dir).get(spec.get("uuid"))
    return {"uuid": spec.get("uuid"), "pid": None, "status": "running" if vm else "stopped", "qmp_error": None}


def _inventory(state_dir, spec):
    vms = [{"uuid": uuid, "name": vm.get("name"), "pid": None, "status": "running", "generation": vm.get("generation")}
           for uuid, vm in running_vms(state_dir).items()]
    return {"vms": vms, "networks": [], "taps": [], "bridges": [], "vxlans": [],
            "ruleset": {"table": "", "present": True, "chains": [], "guarded_ports": []},
            "unknown_qemu": [], "unknown_radvd": []}


def _host_info(state_dir, spec):
    from .hostinfo import HOST_BINARIES, VERSION
    from .program import program_checksum

    return {"version": VERSION, "sha256": program_checksum(), "recording": True,
            "binaries": {name: f"(recorded) {name}" for name in HOST_BINARIES},
            "kvm": {"usable": False, "reason": "a recording host runs no guests"},
            "state_dir": state_dir, "pid": os.getpid()}


# What each verb answers on success, as far as the control plane reads it; the rest answer {}.
ANSWERS = {
    "host-info": _host_info,
    "vm-up": lambda state_dir, spec: {"uuid": spec.get("uuid"), "name": spec.get("name"), "pid": None,
                                      "status": "running", "accel": "recorded"},
    "vm-down": lambda state_dir, spec: {"uuid": spec.get("uuid"), "stopped_by": "recorded", "changes": []},
    "vm-status": _vm_status,
    "inventory": _inventory,
    "disk-ensure": lambda state_dir, spec: {
        "disk_uuid": spec["disk_uuid"], "path": disk_path(state_dir, spec["disk_uuid"]), "format": "qcow2",
        "virtual_size_bytes": spec.get("size_mib", 0) * 1024 * 1024, "base_sha256": spec.get("base_sha256"),
        "changes": []},
    "vm-metadata": lambda state_dir, spec: {"uuid": spec.get("uuid"),
                                            "config_drive": vm_metadata_paths(state_dir, spec["uuid"])["drive"],
                                            "changes": []},
}


def delay_of_each_verb(state_dir):
    with open(recording_paths(state_dir)["marker"]) as handle:
        text = handle.read().strip()
    settings = json.loads(text) if text.startswith("{") else {}
    return float(settings.get("verb_delay_s", 0))


def answer(verb, spec):
    state_dir = check_state_dir(spec["state_dir"])
    record(state_dir, verb, {key: value for key, value in spec.items() if key != "state_dir"})
    delay = delay_of_each_verb(state_dir)
    if delay:
        time.sleep(delay)
    make = ANSWERS.get(verb)
    return make(state_dir, spec) if make else {"changes": []}
