"""vm-metadata / vm-metadata-delete (NoCloud config drives) and metadata-up / metadata-down (the
metadata HTTP service, started as this same program's metadata-serve verb).
"""

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from .addressing import METADATA_ADDRESS, METADATA_PORT, bridge_name
from .checks import (
    CMDLINE_RE,
    check_domain,
    check_fields,
    check_int,
    check_list,
    check_state_dir,
    check_string,
    check_uuid,
)
from .errors import HostsideError, bad_spec
from .guests import qemu_processes_using
from .iso9660 import write_iso9660
from .nft import apply_ruleset, load_network_states
from .paths import metadata_server_paths, vm_metadata_paths
from .program import program_path
from .state import (
    ensure_directory,
    host_lock,
    owned_process,
    process_is_alive,
    read_json_file,
    read_text,
    remove_file,
    send_signal,
    stop_process,
    tail_of_file,
    write_file_atomically,
    write_json_file,
)
from .system import require_binaries

SSH_PUBLIC_KEY_RE = re.compile(r"^(ssh|ecdsa|sk)-[A-Za-z0-9@.-]+ [A-Za-z0-9+/]+={0,3}( [\x20-\x7e]*)?$")
KEY_NAME_RE = re.compile(r"^[\x20-\x7e]{1,100}$")

MAX_USER_DATA_BYTES = 65536
CONFIG_DRIVE_LABEL = "cidata"  # NoCloud's volume label


def parse_vm_metadata_spec(spec):
    check_fields(spec, ["state_dir", "uuid", "hostname", "ssh_keys", "user_data"],
                 ["name", "project_id", "network_config"])
    state_dir = check_state_dir(spec["state_dir"])
    vm_uuid = check_uuid(spec["uuid"])
    hostname = check_domain(spec["hostname"], "hostname")
    keys = []
    for index, key in enumerate(check_list(spec["ssh_keys"], "ssh_keys", 32)):
        check_fields(key, ["name", "public_key"])
        keys.append({"name": check_string(key["name"], f"ssh_keys[{index}].name", KEY_NAME_RE,
                                          "1 to 100 printable ASCII characters"),
                     "public_key": check_string(key["public_key"], f"ssh_keys[{index}].public_key",
                                                SSH_PUBLIC_KEY_RE, "an OpenSSH public key line")})
    user_data = spec["user_data"]
    if not isinstance(user_data, str) or len(user_data.encode()) > MAX_USER_DATA_BYTES:
        raise bad_spec(f"user_data must be text of at most {MAX_USER_DATA_BYTES} bytes")
    network_config = spec.get("network_config")
    if network_config is not None and (not isinstance(network_config, dict)
                                       or len(json.dumps(network_config)) > MAX_USER_DATA_BYTES):
        raise bad_spec("network_config must be a JSON object (a cloud-init network config)")
    name = spec.get("name", hostname)
    if not isinstance(name, str) or not CMDLINE_RE.match(name) or not 0 < len(name) <= 255:
        raise bad_spec("name must be printable ASCII")
    project_id = spec.get("project_id", "")
    if not isinstance(project_id, str) or not re.fullmatch(r"[0-9a-f-]{0,36}", project_id):
        raise bad_spec("project_id must be a UUID")
    return state_dir, {"uuid": vm_uuid, "name": name, "hostname": hostname, "ssh_keys": keys,
                       "user_data": user_data, "network_config": network_config,
                       "project_id": project_id}


def nocloud_meta_data(metadata):
    # YAML, written line by line so simple readers (the demo guest's sed) find local-hostname.
    # JSON strings are valid YAML double-quoted scalars.
    lines = [f"instance-id: {json.dumps(metadata['uuid'])}",
             f"local-hostname: {metadata['hostname']}"]
    if metadata["ssh_keys"]:
        lines.append("public-keys:")
        lines += [f"  - {json.dumps(key['public_key'])}" for key in metadata["ssh_keys"]]
    return "\n".join(lines) + "\n"


def config_drive_files(metadata):
    files = {"meta-data": nocloud_meta_data(metadata),
             "user-data": metadata["user_data"] or "#cloud-config\n{}\n"}
    if metadata["network_config"] is not None:
        files["network-config"] = json.dumps(metadata["network_config"], indent=1) + "\n"
    # Read by the uncloud demo guest only (cloud-init ignores it): ask the metadata service too.
    files["uncloud.cfg"] = "uc.metadata=1\n"
    return {name: text.encode() for name, text in files.items()}


def build_config_drive(paths, metadata):
    """A NoCloud config drive: ISO 9660 (Rock Ridge + Joliet) labelled cidata, written by
    iso9660.py (genisoimage cost a ~5 ms spawn per create). Its dates are fixed, so the same
    metadata makes the same bytes: a migration's destination rebuilds the very drive the guest
    has been reading."""
    target = paths["drive"]
    temporary = target + ".tmp"
    try:
        remove_file(temporary)
        write_iso9660(temporary, config_drive_files(metadata), CONFIG_DRIVE_LABEL)
        os.replace(temporary, target)
    except BaseException as error:
        remove_file(temporary)  # a full disk (or any failure) leaves no half-written drive
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise HostsideError("disk_full", f"writing {temporary} ran out of disk space: {error}") from None
        raise
    return target


def verb_vm_metadata(spec):
    """What the guest learns about itself: written for the metadata service and burnt into a
    NoCloud config drive (attach it to vm-up as {path, format: raw, readonly: true})."""
    state_dir, metadata = parse_vm_metadata_spec(spec)
    paths = vm_metadata_paths(state_dir, metadata["uuid"])
    changes = []
    with host_lock(state_dir):
        ensure_directory(paths["dir"])
        record, drive = paths["record"], paths["drive"]
        if read_json_file(record) != metadata or not os.path.isfile(drive):
            build_config_drive(paths, metadata)
            write_json_file(record, metadata)
            changes.append("wrote metadata and config drive")
    return {"uuid": metadata["uuid"], "config_drive": drive, "changes": changes}


def verb_vm_metadata_delete(spec):
    check_fields(spec, ["state_dir", "uuid"])
    state_dir = check_state_dir(spec["state_dir"])
    paths = vm_metadata_paths(state_dir, check_uuid(spec["uuid"]))
    directory = paths["dir"]
    changes = []
    with host_lock(state_dir):
        drive = paths["drive"]
        if os.path.exists(drive) and qemu_processes_using(state_dir, drive):
            raise HostsideError("in_use", "the config drive is attached to a running VM")
        if os.path.isdir(directory):
            shutil.rmtree(directory)
            changes.append("removed metadata")
    return {"changes": changes}


def running_metadata_server(state_dir):
    paths = metadata_server_paths(state_dir)
    return owned_process(paths["pid"], f"uncloud_metadata={paths['marker']}")


def bridges_of_networks(state_dir):
    return {bridge_name(network["vni"]): network["vni"] for network in load_network_states(state_dir)}


def bridge_ifindex(bridge):
    text = read_text(f"/sys/class/net/{bridge}/ifindex")
    return int(text) if text is not None and text.strip().isdigit() else None


def metadata_bridges_up(state_dir):
    """{bridge: ifindex} of this host's networks' bridges that exist now: what the service must
    serve. The index tells a bridge made again (net-down, net-up) from the one a listener is on."""
    up = {}
    for bridge in bridges_of_networks(state_dir):
        index = bridge_ifindex(bridge)
        if index is not None:
            up[bridge] = index
    return up


def metadata_serves(state, wanted):
    """Whether the service's state file says it listens on every wanted bridge (the very same
    interfaces, when it says which; a service started by an older version names bridges only)."""
    if "served" in state:
        return all(state["served"].get(bridge) == index for bridge, index in wanted.items())
    return set(wanted) <= set(state.get("bridges", []))


def verb_metadata_up(spec):
    """Start the metadata service of this host unless it runs. It follows networks by itself:
    every second it binds [fe80::a9fe:a9fe%br<vni>]:80 on each bridge that is up."""
    check_fields(spec, ["state_dir"], ["port"])
    state_dir = check_state_dir(spec["state_dir"])
    port = check_int(spec.get("port", METADATA_PORT), "port", 1, 65535)
    require_binaries("ip")
    paths = metadata_server_paths(state_dir)
    changes = []
    # Every create asks: when the service runs on this port and serves every bridge, answer
    # without the host lock (other verbs may hold it for a while) and without starting anything.
    pid = running_metadata_server(state_dir)
    if pid is not None and (read_json_file(paths["spec"]) or {}).get("port") == port:
        state = read_json_file(paths["state"]) or {}
        if metadata_serves(state, metadata_bridges_up(state_dir)):
            return {"pid": pid, "address": METADATA_ADDRESS, "port": port,
                    "bridges": sorted(state.get("bridges", [])), "changes": changes}
    with host_lock(state_dir):
        ensure_directory(paths["dir"])
        pid = running_metadata_server(state_dir)
        recorded = read_json_file(paths["spec"])
        if pid is not None and (recorded or {}).get("port") != port:
            stop_process(pid)
            pid = None
            changes.append("stopped metadata service (port changed)")
        if pid is None:
            write_json_file(paths["spec"], {"state_dir": state_dir, "port": port})
            if load_network_states(state_dir):
                apply_ruleset(state_dir)  # guests may reach the host on the metadata port only
            remove_file(paths["state"])
            with open(paths["spec"]) as spec_file, open(paths["log"], "a") as log:
                process = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-X", f"uncloud_metadata={paths['marker']}",
                     program_path(), "metadata-serve"],
                    stdin=spec_file, stdout=log, stderr=log, cwd=paths["dir"], start_new_session=True)
            write_file_atomically(paths["pid"], f"{process.pid}\n")
            pid = process.pid
            changes.append("started metadata service")
    # Wait until every bridge that is up now is served, so a guest started next finds it. A
    # service that says it wakes on SIGUSR1 is told to look now instead of at its next rescan.
    wanted = metadata_bridges_up(state_dir)
    deadline = time.monotonic() + 10
    woken = False
    while True:
        state = read_json_file(paths["state"]) or {}
        served = set(state.get("bridges", []))
        if metadata_serves(state, wanted):
            break
        if not process_is_alive(pid) or time.monotonic() > deadline:
            raise HostsideError("command_failed", "the metadata service did not come up",
                                stderr=tail_of_file(paths["log"]))
        if not woken and state.get("wakes_on") == "SIGUSR1":
            send_signal(pid, signal.SIGUSR1)
            woken = True
        time.sleep(0.01)
    return {"pid": pid, "address": METADATA_ADDRESS, "port": port, "bridges": sorted(served),
            "changes": changes}


def verb_metadata_down(spec):
    check_fields(spec, ["state_dir"])
    state_dir = check_state_dir(spec["state_dir"])
    paths = metadata_server_paths(state_dir)
    changes = []
    pid = running_metadata_server(state_dir)
    if pid is not None:
        stop_process(pid)
        changes.append("stopped metadata service")
    for stale in (paths["pid"], paths["state"]):
        remove_file(stale)
    return {"changes": changes}
