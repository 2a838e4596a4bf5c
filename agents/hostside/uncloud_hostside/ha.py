"""High availability on the host: the heartbeat (renews the fence lease), the self-fence guard,
peer probes, start generations and the Ceph blocklist fence.

    <state_dir>/ha/lease.json       renewed by every heartbeat: when (CLOCK_MONOTONIC) and for how long
    <state_dir>/ha/guard.pid        the guard (started by heartbeat; a systemd unit on real hosts)
    <state_dir>/ha/fenced.json      what the guard did when the lease ran out (reported, then removed)
    <state_dir>/vms/<uuid>/generation   the highest start generation this host has heard of
    <state_dir>/ha/holders/<uuid>       the newest claim on that target (an operation's step) heard of

The guard kills every guest of this host when the lease ran out AND the host is the one cut off:
a peer (over the underlay) still hears the control plane, or no peer answers at all. When peers
answer but none of them hears the control plane either, the control plane is what failed: the
guests keep running (a switch or control-plane outage must not take every VM down).
"""

import concurrent.futures
import contextlib
import fcntl
import ipaddress
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time

from .checks import (
    RBD_NAME_RE,
    check_fields,
    check_int,
    check_ipv6_address,
    check_list,
    check_number,
    check_state_dir,
    check_string,
    check_uuid,
)
from .errors import HostsideError, bad_spec
from .guests import processes_under_state_dir, running_qemu
from .paths import ha_paths, vm_dir, vm_paths, vms_dir
from .program import program_path
from .rbd import check_ceph_conf, parse_rbd_target, rbd_command, rbd_spec_of
from .state import (
    ensure_directory,
    file_lock,
    process_cmdline,
    process_is_alive,
    read_json_file,
    read_pid_file,
    read_text,
    remove_file,
    send_signal,
    stop_process,
    wait_for_exit,
    write_file_atomically,
    write_json_file,
)
from .system import command_failure, require_binaries, run_command
from .vmspec import MAX_GENERATION

HA_GUARD_PORT = 7411
GUARD_TICK_S = 0.2
GUARD_PEER_TIMEOUT_S = 1.0
GUARD_PEER_RECHECK_S = 1.0


def read_lease(state_dir):
    try:
        return read_json_file(ha_paths(state_dir)["lease"])
    except ValueError:
        return None


def lease_expired(lease):
    return lease is not None and time.monotonic() > lease["renewed"] + lease["lease_s"]


def running_guard(state_dir):
    """The guard's pid when it runs this very program (a newer program replaces an older guard)."""
    pid = read_pid_file(ha_paths(state_dir)["pid"])
    if pid is None or not process_is_alive(pid):
        return None
    argv = process_cmdline(pid)
    return pid if argv[-3:] == [program_path(), "guard", state_dir] else None


def ensure_guard(state_dir):
    """The guard's pid, or None while one is starting: the heartbeat never waits for it (a loaded
    host may take seconds to start a Python). A guard started twice exits: it holds guard.lock."""
    paths = ha_paths(state_dir)
    pid = running_guard(state_dir)
    if pid is not None:
        return pid
    old = read_pid_file(paths["pid"])
    if old is not None and process_is_alive(old) and "guard" in process_cmdline(old) \
            and state_dir in process_cmdline(old):
        stop_process(old, term_wait_s=2)  # an older program's guard: replaced by this one
    with open(paths["log"], "a") as log:
        subprocess.Popen([sys.executable, "-I", "-S", program_path(), "guard", state_dir],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                         start_new_session=True, close_fds=True)
    return None


def qemu_guests(state_dir):
    """{pid: vm uuid or None} of every qemu whose command line names this state_dir."""
    vm_path_re = re.compile(re.escape(vms_dir(state_dir)) + r"/([^/,]+)/")
    guests = {}
    for pid, argv in processes_under_state_dir(state_dir):
        if os.path.basename(argv[0]).startswith("qemu-system"):
            match = next((vm_path_re.search(arg) for arg in argv if vm_path_re.search(arg)), None)
            guests[pid] = match.group(1) if match else None
    return guests


def kill_guests(pids):
    for pid in pids:
        send_signal(pid, signal.SIGKILL)
    for pid in pids:
        wait_for_exit(pid, 5)


def ask_peer(address, port, timeout_s=GUARD_PEER_TIMEOUT_S):
    """What a peer's guard says over the underlay: {"reachable", "guard", "lease_fresh", "error"}."""
    try:
        with socket.create_connection((address, port), timeout=timeout_s) as connection:
            connection.settimeout(timeout_s)
            data = b""
            while not data.endswith(b"\n") and len(data) < 4096:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                data += chunk
        answer = json.loads(data or b"{}")
        return {"reachable": True, "guard": True, "lease_fresh": answer.get("lease_fresh"),
                "silent_s": answer.get("silent_s"), "error": ""}
    except ConnectionRefusedError as error:  # its kernel answered: the host is up, its guard is not
        return {"reachable": True, "guard": False, "lease_fresh": None, "silent_s": None, "error": str(error)}
    except (OSError, ValueError) as error:
        return {"reachable": False, "guard": False, "lease_fresh": None, "silent_s": None, "error": str(error)}


def fence_verdict(lease):
    """("fence" | "hold", why) for a host whose lease ran out. A peer "still hears the control
    plane" when it heard it within half a lease: when the control plane itself stops, every lease
    runs out within a heartbeat interval of the others, and none of them counts as hearing it."""
    peers = lease.get("peers") or []
    if not peers:
        return "hold", "no peers to tell a cut-off host from a silent control plane; a lone host keeps its guests"
    answers = {peer: ask_peer(peer, lease.get("port", HA_GUARD_PORT)) for peer in peers}
    if any(answer["silent_s"] is not None and answer["silent_s"] < lease["lease_s"] / 2
           for answer in answers.values()):
        return "fence", "a peer still hears the control plane: this host is the one cut off"
    if not any(answer["reachable"] for answer in answers.values()):
        return "fence", "no peer answers over the underlay: this host is isolated"
    return "hold", "peers answer but none hears the control plane either: the control plane is down, guests stay"


def guard_listener(address, port):
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, port))
    listener.listen(16)
    listener.setblocking(False)
    return listener


def answer_peers(state_dir, stop):
    """The guard's listener thread: tell peers how long this host has not heard the control plane.
    A thread of its own, so two guards asking each other at the same moment both get answers."""
    listener, listening_on = None, None
    while not stop.is_set():
        lease = read_lease(state_dir)
        wanted = (lease or {}).get("listen")
        wanted = (wanted, (lease or {}).get("port", HA_GUARD_PORT)) if wanted else None
        if wanted != listening_on:
            if listener is not None:
                listener.close()
                listener = None
            listening_on = wanted
            if wanted:
                try:
                    listener = guard_listener(*wanted)
                except OSError as error:
                    sys.stderr.write(f"guard: cannot listen on {wanted}: {error}\n")
                    listening_on = None
        if listener is None:
            time.sleep(GUARD_TICK_S)
            continue
        if not select.select([listener], [], [], GUARD_TICK_S)[0]:
            continue
        with contextlib.suppress(OSError):
            connection, _ = listener.accept()
            with connection:
                connection.setblocking(True)
                connection.settimeout(1)
                lease = read_lease(state_dir)
                fresh = lease is not None and not lease_expired(lease)
                silent_s = None if lease is None else round(time.monotonic() - lease["renewed"], 3)
                connection.sendall(json.dumps({"lease_fresh": fresh, "silent_s": silent_s}).encode() + b"\n")


def run_guard(state_dir):
    """The guard's loop (runs until killed): fence when the lease runs out and this host is the
    one cut off; a thread answers the peers meanwhile."""
    paths = ha_paths(state_dir)
    ensure_directory(paths["dir"])
    lock = open(os.path.join(paths["dir"], "guard.lock"), "w")  # held (open) for the guard's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another guard of this state dir runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    write_file_atomically(paths["pid"], f"{os.getpid()}\n")
    stop = threading.Event()
    threading.Thread(target=answer_peers, args=(state_dir, stop), daemon=True).start()
    fenced_lease, next_peer_check = None, 0.0
    while True:
        time.sleep(GUARD_TICK_S)
        lease = read_lease(state_dir)
        if not lease_expired(lease):
            continue
        if fenced_lease == lease["renewed"]:
            # Fenced until the control plane renews the lease: a start that slipped in dies too.
            late = qemu_guests(state_dir)
            if late:
                kill_guests(list(late))
                sys.stderr.write(f"guard: killed guests started while fenced: {sorted(late.values(), key=str)}\n")
            continue
        if time.monotonic() < next_peer_check:
            continue
        next_peer_check = time.monotonic() + GUARD_PEER_RECHECK_S
        verdict, why = fence_verdict(lease)
        if verdict != "fence":
            continue
        guests = qemu_guests(state_dir)
        kill_guests(list(guests))
        fenced_lease = lease["renewed"]
        write_json_file(paths["fenced"], {
            "at": time.time(), "why": why, "lease_s": lease["lease_s"], "lease_renewed": lease["renewed"],
            "silent_s": round(time.monotonic() - lease["renewed"], 3),
            "killed": sorted(uuid for uuid in guests.values() if uuid)})
        sys.stderr.write(f"guard: fenced ({why}): killed {sorted(guests.values(), key=str)}\n")


def generation_path(state_dir, vm_uuid):
    return os.path.join(vm_dir(state_dir, vm_uuid), "generation")


def known_generation(state_dir, vm_uuid):
    text = read_text(generation_path(state_dir, vm_uuid))
    return int(text) if text and text.strip().isdigit() else None


def remember_generation(state_dir, vm_uuid, generation):
    """vm-up and the heartbeat (separate processes) both record what they were told: under one lock,
    so neither renames the other's temporary file away (a vm-up failed so in bench/failover.py)
    nor writes back an older generation than the other just wrote."""
    paths = ha_paths(state_dir)
    ensure_directory(paths["dir"])
    with file_lock(paths["generations_lock"], "another call holds the generations' lock"):
        known = known_generation(state_dir, vm_uuid)
        if known is None or generation > known:
            write_file_atomically(generation_path(state_dir, vm_uuid), f"{generation}\n")


def refuse_stale_start(state_dir, vm_uuid, generation):
    """vm-up's HA check: no guest starts on a host that fenced itself (until the lease is renewed),
    nor from a caller holding an older generation than this host has heard of. A lease that ran out
    while the guard holds (the control plane is silent for every host) refuses nothing."""
    lease = read_lease(state_dir)
    if lease_expired(lease):
        fenced = None
        with contextlib.suppress(ValueError):
            fenced = read_json_file(ha_paths(state_dir)["fenced"])
        if fenced is not None and fenced.get("lease_renewed") == lease["renewed"]:
            raise HostsideError("fenced", "this host fenced itself: it has not heard from the control plane "
                                f"within its lease ({lease['lease_s']} s) while its peers did; no guest starts "
                                "until the lease is renewed")
    if generation is None:
        return
    known = known_generation(state_dir, vm_uuid)
    if known is not None and generation < known:
        raise HostsideError("stale_generation", f"start generation {generation} of VM {vm_uuid} is older "
                            f"than generation {known}: the caller lost the VM to a newer start")
    remember_generation(state_dir, vm_uuid, generation)


HOLDER_TOKEN_MAX = 2**53


def spec_of_request(request):
    """The spec of a `serve` request, after its holder check: a call made by an operation's step
    carries {"target": the operation's target uuid, "token": the step's claim, ranked above every earlier
    claim on that target (its time in ms, or more when a clock stepped back)}."""
    spec = request["spec"]
    if request.get("holder") is not None:
        if not isinstance(spec, dict):
            raise bad_spec("spec must be a JSON object")
        refuse_stale_holder(check_state_dir(spec.get("state_dir")), request["holder"])
    return spec


def refuse_stale_holder(state_dir, holder):
    """Refuse a call from a worker that lost its operation: once a newer step of the same target
    (another worker that took the operation over, or a later operation) has called this host, an
    older step's call that arrives late (a partition healed, a worker paused) changes nothing."""
    check_fields(holder, ["target", "token"])
    target = check_uuid(holder["target"])
    token = check_int(holder["token"], "holder.token", 0, HOLDER_TOKEN_MAX)
    directory = ha_paths(state_dir)["holders"]
    ensure_directory(directory)
    path = os.path.join(directory, target)
    with file_lock(os.path.join(directory, ".lock"), "another call holds the holders' lock"):
        text = read_text(path)
        known = int(text) if text and text.strip().isdigit() else None
        if known is not None and token < known:
            raise HostsideError("stale_holder", f"this call for {target} comes from a step that started before "
                                "a newer one that already reached this host: its worker lost the operation")
        if known is None or token > known:
            write_file_atomically(path, f"{token}\n")


def guest_generations(state_dir):
    """{vm uuid: {"running": bool, "generation": the running qemu's start generation or None}}."""
    directory = vms_dir(state_dir)
    guests = {}
    for entry in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        try:
            recorded = read_json_file(os.path.join(directory, entry, "spec.json"))
        except ValueError:
            recorded = None
        if recorded is None:
            continue
        guests[entry] = {"running": running_qemu(state_dir, entry) is not None,
                         "generation": recorded.get("generation")}
    return guests


def kill_stale_generations(state_dir, generations):
    """Kill each running guest whose start generation is older than the control plane's: the VM
    was started again elsewhere. A guest started without a generation is left alone."""
    killed = []
    for vm_uuid, generation in generations.items():
        if not os.path.isdir(vm_dir(state_dir, vm_uuid)):
            continue
        try:
            remember_generation(state_dir, vm_uuid, generation)
        except FileNotFoundError:
            continue  # a vm-down purge removed its directory meanwhile: the VM is gone from here
        recorded = read_json_file(vm_paths(state_dir, vm_uuid)["spec"]) or {}
        running = recorded.get("generation")
        pid = running_qemu(state_dir, vm_uuid)
        if pid is not None and running is not None and running < generation:
            kill_guests([pid])
            killed.append(vm_uuid)
    return killed


def verb_heartbeat(spec):
    """Renew this host's fence lease, make sure its guard runs, learn the current start generations
    (killing stale copies at once) and report the guests. Cheap: no process is started normally."""
    check_fields(spec, ["state_dir", "lease_s"], ["peers", "port", "listen", "generations"])
    state_dir = check_state_dir(spec["state_dir"])
    lease_s = check_number(spec["lease_s"], "lease_s", 1, 3600)
    peers = [str(check_ipv6_address(peer, "peers[]")) for peer in check_list(spec.get("peers", []), "peers", 64)]
    listen = spec.get("listen")
    if listen is not None:
        listen = str(check_ipv6_address(listen, "listen"))
    port = check_int(spec.get("port", HA_GUARD_PORT), "port", 1, 65535)
    generations = spec.get("generations", {})
    if not isinstance(generations, dict) or len(generations) > 100000:
        raise bad_spec("generations must be an object of at most 100000 VM uuids")
    generations = {check_uuid(key): check_int(value, "generations[]", 0, MAX_GENERATION)
                   for key, value in generations.items()}
    paths = ha_paths(state_dir)
    ensure_directory(paths["dir"])
    write_json_file(paths["lease"], {"renewed": time.monotonic(), "lease_s": lease_s, "peers": peers,
                                     "listen": listen, "port": port, "written": time.time()})
    guard_pid = ensure_guard(state_dir)
    killed = kill_stale_generations(state_dir, generations)
    fenced = None
    with contextlib.suppress(ValueError):
        fenced = read_json_file(paths["fenced"])
    if fenced is not None:
        remove_file(paths["fenced"])  # reported once; the control plane records it
    return {"guard_pid": guard_pid, "guests": guest_generations(state_dir), "killed_stale": killed,
            "fenced": fenced}


def verb_peer_probe(spec):
    """The second opinion: can this host reach its peers over the underlay (and do their guards
    still hear the control plane)? → {address: {reachable, guard, lease_fresh, error}}."""
    check_fields(spec, ["state_dir", "addresses"], ["port", "timeout_s"])
    addresses = [str(check_ipv6_address(address, "addresses[]"))
                 for address in check_list(spec["addresses"], "addresses", 64)]
    port = check_int(spec.get("port", HA_GUARD_PORT), "port", 1, 65535)
    timeout_s = check_number(spec.get("timeout_s", GUARD_PEER_TIMEOUT_S), "timeout_s", 0.1, 10)
    return {"peers": {address: ask_peer(address, port, timeout_s) for address in addresses}}




def verb_ceph_blocklist(spec):
    """The storage fence: `ceph osd blocklist add|rm ADDRESS`, then `ls` to confirm.
    → {"address", "listed": bool, "entries": [...]}"""
    check_fields(spec, ["state_dir", "ceph_conf", "address", "action"], ["user", "expire_s"])
    state_dir = check_state_dir(spec["state_dir"])
    conf = check_ceph_conf(spec["ceph_conf"], state_dir)
    user = check_string(spec.get("user", "admin"), "user", RBD_NAME_RE, "a Ceph client id")
    # A bare address blocklists every client of that host (`[addr]:0/0`); Ceph's CLI refuses brackets.
    try:
        address = str(ipaddress.ip_address(spec["address"]))
    except (TypeError, ValueError):
        raise bad_spec("address must be the host's Ceph client IP address") from None
    if spec["action"] not in ("add", "rm", "ls"):
        raise bad_spec("action must be add, rm or ls")
    require_binaries("ceph")
    ceph = ["ceph", "--conf", conf, "--id", user]
    if spec["action"] == "add":
        expire = check_int(spec.get("expire_s", 315360000), "expire_s", 60, 315360000)
        run_command([*ceph, "osd", "blocklist", "add", address, str(expire)])
    elif spec["action"] == "rm":
        completed = run_command([*ceph, "osd", "blocklist", "rm", address], check=False)
        if completed.returncode != 0 and "isn't blocklisted" not in completed.stderr + completed.stdout:
            raise command_failure([*ceph, "osd", "blocklist", "rm", address], completed)
    listed = run_command([*ceph, "osd", "blocklist", "ls", "--format", "json"])
    # The JSON list comes first; Ceph may print "listed N entries" after it.
    entries, _ = json.JSONDecoder().raw_decode(listed.stdout.strip() or "[]")
    addresses = [entry.get("addr", "") for entry in entries if isinstance(entry, dict)]
    found = any(entry.split("/")[0].rsplit(":", 1)[0].strip("[]") == address for entry in addresses)
    return {"address": address, "listed": found, "entries": addresses}


def verb_rbd_watchers(spec):
    """Who holds each RBD image open (`rbd status`): {"watchers": {image: [client addresses]}}. A VM
    restarted after a host failure starts only once its disks have no watcher left (the failed
    host's watch goes when the OSDs apply its blocklist, a moment after the monitors listed it)."""
    check_fields(spec, ["state_dir", "pool", "images", "ceph_conf"], ["user"])
    state_dir = check_state_dir(spec["state_dir"])
    require_binaries("rbd")
    targets = [parse_rbd_target({**spec, "image": image}, state_dir, "image")
               for image in check_list(spec["images"], "images", 16)]
    # At once, not one after another: a failed host's VMs are checked together (one `rbd status`
    # per image is all Ceph offers), and each command spends most of its time connecting.
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        answers = list(pool.map(lambda target: rbd_command(target, "status", "--format", "json",
                                                           rbd_spec_of(target)), targets))
    watchers = {}
    for target, completed in zip(targets, answers, strict=True):
        status, _ = json.JSONDecoder().raw_decode(completed.stdout.strip() or "{}")
        watchers[target["name"]] = [entry.get("address", "") for entry in status.get("watchers", [])]
    return {"watchers": watchers}
