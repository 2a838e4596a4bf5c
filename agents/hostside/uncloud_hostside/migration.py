"""Live migration: a running guest moves to another host (QMP, no libvirt).

The stream never crosses the underlay in the clear: qemu on each side talks to a unix socket in
the VM's directory, and the hosts join those sockets over SSH.

  source: qemu --migrate/NBD--> vms/<uuid>/migo.sock, nbdo.sock   (migration-tunnel, a daemon)
          each connection -> `ssh -i vms/<uuid>/migration_key root@<dest underlay> KIND UUID`
  dest:   sshd forces `uncloud_hostside.pyz migration-relay <state_dir> <uuid>` for that key (and
          only from the source's underlay address), which joins the SSH channel to
          vms/<uuid>/mig.sock (qemu -incoming) or vms/<uuid>/nbd.sock (qemu's NBD server).

The key is made for one migration of one VM: it can open nothing but that VM's two incoming
sockets on the destination, and its authorized_keys line goes when the move ends either way
(migration-deauthorize). Two VMs leaving one host for another at once have a key each (sshd takes
the first line a key matches, so one host-wide key could not be bound to a VM). Local qcow2 disks
travel as a blockdev-mirror into the destination's NBD export; RBD disks are shared.

  source: migrate-source-prepare  the migration's public key, the VM's accel and drives, refuses
                                  hot-plugged disks
  dest:   migration-authorize     that key in <state_dir>/migration/authorized_keys, bound to the VM
  dest:   vm-incoming             ports, taps, rules, qemu -S -incoming defer, migrate-incoming, NBD exports
  source: migrate-send            tunnel, mirrors until READY, capabilities, migrate, poll, raise downtime;
                                  with mirrors it pauses before the switchover and completes them
                                  there (the guest is stopped: the copies are equal), then goes on
  dest:   migrate-finish          NBD server stopped, cont, announce-self (called at once after the
                                  send: the guest's pause ends before the source is tidied)
  source: migrate-source-release  mirror targets removed, tunnel down, the migration key gone
  dest:   migration-deauthorize   the VM's key line removed
  source: migrate-abort           migration and mirrors cancelled, tunnel down, the guest runs again
Each verb can run twice.
"""

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

from .checks import (
    SAFE_PATH_RE,
    VM_NAME_RE,
    check_bool,
    check_fields,
    check_int,
    check_ipv6_address,
    check_list,
    check_number,
    check_state_dir,
    check_string,
    check_uuid,
)
from .errors import EXIT_BAD_SPEC, EXIT_FAILURE, EXIT_OK, HostsideError, bad_spec
from .guests import running_qemu
from .ha import refuse_stale_start
from .metadata import SSH_PUBLIC_KEY_RE
from .nft import apply_ruleset
from .paths import disks_dir, migration_dir, vm_dir, vm_migration_key_path, vm_paths
from .program import program_path
from .qmp import qmp_status
from .state import (
    ensure_directory,
    file_lock,
    host_lock,
    owned_process,
    read_json_file,
    read_text,
    remove_file,
    stop_process,
    tail_of_file,
    wait_for_exit,
    write_file_atomically,
    write_json_file,
)
from .system import QEMU_BINARY, find_binary, require_binaries, run_command
from .vm import await_qemu, ensure_taps, record_ports, remove_ports_of_failed_start, require_networks_up, spec_for_disk
from .vmspec import parse_vm_up_spec, qemu_argv, resolve_accel

MIGRATION_SOCKETS = {"migrate": ("mig.sock", "migo.sock"), "nbd": ("nbd.sock", "nbdo.sock")}
MIRROR_JOB_PREFIX = "migmirror"
MIRROR_TARGET_PREFIX = "migtarget"
# The poll that sees `completed` (and `pre-switchover`) ends the guest's pause sooner when short.
MIGRATION_POLL_S = 0.05
ARRIVAL_POLL_S = 0.005  # the destination's look for its arrived guest: its pause lasts until then
ARRIVAL_HOLD_S = 1.0  # how long that look keeps the monitor (one client at a time) before letting go
QEMU_DEFAULT_BANDWIDTH_MIB = 128
PUMP_CHUNK = 256 * 1024
ANNOUNCE = {"initial": 50, "max": 550, "rounds": 5, "step": 100}


class QmpSession:
    """One QMP connection that keeps the events it reads (BLOCK_JOB_READY, MIGRATION ...)."""

    def __init__(self, socket_path, timeout_s=10):
        self.socket_path = socket_path
        self.events = []
        self.connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.connection.settimeout(timeout_s)
        try:
            self.connection.connect(socket_path)
            self.reader = self.connection.makefile("rb")
            if "QMP" not in json.loads(self.reader.readline() or b"{}"):
                raise HostsideError("qmp_failed", "no QMP greeting")
        except (OSError, ValueError) as error:
            self.connection.close()
            raise HostsideError("qmp_failed", f"QMP on {socket_path}: {error}") from None
        self.execute("qmp_capabilities")

    def execute(self, command, arguments=None, *, allow_error=False):
        request = {"execute": command, **({"arguments": arguments} if arguments else {})}
        try:
            self.connection.sendall(json.dumps(request).encode() + b"\n")
            while True:
                line = self.reader.readline()
                if not line:
                    raise HostsideError("qmp_failed", f"QMP {command}: the connection closed")
                message = json.loads(line)
                if "event" in message:
                    self.events.append(message)
                    continue
                break
        except (OSError, ValueError) as error:
            raise HostsideError("qmp_failed", f"QMP {command} on {self.socket_path}: {error}") from None
        if "error" in message:
            if allow_error:
                return {"error": message["error"].get("desc", "")}
            raise HostsideError("qmp_failed", f"QMP {command}: {message['error'].get('desc', message['error'])}")
        return message["return"]

    def close(self):
        # The file object holds a reference of its own: the connection (and the monitor, which
        # serves one client at a time) is free only when both are closed.
        with contextlib.suppress(OSError):
            self.reader.close()
        with contextlib.suppress(OSError):
            self.connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def migration_vm(spec, *extra_required, optional=()):
    check_fields(spec, ["state_dir", "uuid", *extra_required], optional)
    state_dir = check_state_dir(spec["state_dir"])
    vm_uuid = check_uuid(spec["uuid"])
    return state_dir, vm_uuid, vm_paths(state_dir, vm_uuid)


def mirrored_drives(state_dir, disks):
    """Drive ids (disk<index>) of the local, writable qcow2 disks: these are copied to the
    destination; RBD disks are shared and read-only ones (the config drive) are made there."""
    prefix = disks_dir(state_dir) + "/"
    return [f"disk{index}" for index, disk in enumerate(disks)
            if not disk.get("hotplug") and not disk.get("readonly") and disk.get("format") == "qcow2"
            and str(disk.get("path", "")).startswith(prefix)]


def running_migration_vm(state_dir, vm_uuid):
    pid = running_qemu(state_dir, vm_uuid)
    if pid is None:
        raise HostsideError("not_found", f"VM {vm_uuid} is not running on this host")
    return pid


def verb_migrate_source_prepare(spec):
    """What the destination needs from the source: the public key of this VM's migration (made for
    it, removed when the migration ends), the VM's accelerator and which drives are copied. A VM with hot-plugged data volumes is refused: the
    destination would start it with a different device model (it moves after a restart)."""
    state_dir, vm_uuid, paths = migration_vm(spec, optional=["comment"])
    require_binaries("ssh", "ssh-keygen")
    pid = running_migration_vm(state_dir, vm_uuid)
    recorded = read_json_file(paths["spec"]) or {}
    hot = [disk["hotplug"]["disk_uuid"] for disk in recorded.get("disks", []) if disk.get("hotplug")]
    if hot:
        raise HostsideError("in_use", "the VM has data volumes plugged in while it ran; it can move live "
                            "after a restart (or cold)", details={"hotplugged_disks": hot})
    key = vm_migration_key_path(state_dir, vm_uuid)
    with host_lock(state_dir):
        if not os.path.isfile(key) or not os.path.isfile(key + ".pub"):
            for stale in (key, key + ".pub"):
                remove_file(stale)
            run_command(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"uncloud-migration-{vm_uuid}",
                         "-f", key])
    public_key = read_text(key + ".pub").split()
    status, qmp_error = qmp_status(paths["qmp"])
    return {"uuid": vm_uuid, "pid": pid, "status": status, "qmp_error": qmp_error,
            "public_key": f"{public_key[0]} {public_key[1]}", "accel": recorded.get("accel"),
            "mirrored_drives": mirrored_drives(state_dir, recorded.get("disks", []))}


def relay_command(state_dir, vm_uuid):
    program = program_path()
    if not SAFE_PATH_RE.match(program):
        raise HostsideError("bad_spec", f"the host-side program's path {program!r} cannot be a forced command")
    return f"/usr/bin/python3 -I -S {program} migration-relay {state_dir} {vm_uuid}"


def key_line_comment(vm_uuid):
    return f" uncloud-migration-{vm_uuid}"


def rewrite_authorized_keys(state_dir, keep, added=None):
    """Keep the lines `keep` accepts, append `added` (once); True when the file changed."""
    path = os.path.join(migration_dir(state_dir), "authorized_keys")
    with host_lock(state_dir):
        ensure_directory(migration_dir(state_dir))
        before = (read_text(path) or "").splitlines(keepends=True)
        lines = [line for line in before if keep(line.rstrip())]
        if added is not None and added not in lines:
            lines.append(added)
        if lines == before:
            return path, False
        write_file_atomically(path, "".join(lines))
        os.chmod(path, 0o600)
    return path, True


def verb_migration_authorize(spec):
    """Let the key of one migration of VM `uuid` from `source` (a host name) in, for the relay of
    that VM only: sshd reads <state_dir>/migration/authorized_keys (see agents/hostside/README.md)
    and forces `migration-relay <state_dir> <uuid>`, which opens nothing but that VM's incoming
    sockets. Host-wide lines of earlier versions (`uncloud-migration-from-<source>`) go."""
    check_fields(spec, ["state_dir", "source", "public_key", "uuid"], ["source_address"])
    state_dir = check_state_dir(spec["state_dir"])
    vm_uuid = check_uuid(spec["uuid"])
    source = check_string(spec["source"], "source", VM_NAME_RE, "a host name")
    public_key = check_string(spec["public_key"], "public_key", SSH_PUBLIC_KEY_RE, "an OpenSSH public key")
    if not public_key.startswith("ssh-ed25519 "):
        raise bad_spec("public_key must be an ssh-ed25519 key")
    options = ["restrict", f'command="{relay_command(state_dir, vm_uuid)}"']
    if spec.get("source_address") is not None:
        address = check_ipv6_address(spec["source_address"], "source_address")
        options.insert(0, f'from="{address}"')
    line = f"{','.join(options)} {' '.join(public_key.split()[:2])}{key_line_comment(vm_uuid)} from {source}\n"
    marker = key_line_comment(vm_uuid) + " "
    path, changed = rewrite_authorized_keys(
        state_dir, lambda kept: marker not in kept and not kept.endswith(f" uncloud-migration-from-{source}"), line)
    return {"path": path, "changes": [f"authorized {source} for {vm_uuid}"] if changed else []}


def verb_migration_deauthorize(spec):
    """The migration key of VM `uuid` no longer opens anything here (its move ended either way)."""
    state_dir, vm_uuid, _ = migration_vm(spec)
    marker = key_line_comment(vm_uuid) + " "
    path, changed = rewrite_authorized_keys(state_dir, lambda kept: marker not in kept)
    return {"path": path, "changes": [f"revoked the migration key of {vm_uuid}"] if changed else []}


def pump(read_chunk, write_all, on_end):
    """Copy until the reader ends, then call on_end (half-close the other side)."""
    try:
        while True:
            data = read_chunk()
            if not data:
                break
            write_all(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            on_end()


def write_fd_all(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def join_fds_and_socket(read_fd, write_fd, connection):
    """Both directions at once until both have ended."""
    inbound = threading.Thread(target=pump, daemon=True, args=(
        lambda: os.read(read_fd, PUMP_CHUNK), connection.sendall,
        lambda: connection.shutdown(socket.SHUT_WR)))
    inbound.start()
    pump(lambda: connection.recv(PUMP_CHUNK), lambda data: write_fd_all(write_fd, data),
         lambda: os.close(write_fd))
    inbound.join()


def migration_relay(state_dir, allowed_uuid):
    """The forced command of one migration's key (destination side): SSH_ORIGINAL_COMMAND names the
    socket, `migrate <uuid>` or `nbd <uuid>`, of the one VM the key was let in for (allowed_uuid);
    stdin/stdout become that socket's stream."""
    check_state_dir(state_dir)
    words = os.environ.get("SSH_ORIGINAL_COMMAND", "").split()
    if len(words) != 2 or words[0] not in MIGRATION_SOCKETS:
        sys.stderr.write("usage: migrate|nbd <vm uuid>\n")
        return EXIT_BAD_SPEC
    try:
        vm_uuid, allowed = check_uuid(words[1]), check_uuid(allowed_uuid)
    except HostsideError as error:
        sys.stderr.write(error.message + "\n")
        return EXIT_BAD_SPEC
    if vm_uuid != allowed:
        sys.stderr.write(f"this key opens only the sockets of VM {allowed}\n")
        return EXIT_BAD_SPEC
    path = os.path.join(vm_dir(state_dir, vm_uuid), MIGRATION_SOCKETS[words[0]][0])
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        try:
            connection.connect(path)
        except OSError as error:
            sys.stderr.write(f"no incoming {words[0]} socket for {vm_uuid}: {error}\n")
            return EXIT_FAILURE
        join_fds_and_socket(0, 1, connection)
    return EXIT_OK


def tunnel_paths(state_dir, vm_uuid):
    directory = vm_dir(state_dir, vm_uuid)
    return {"config": os.path.join(directory, "tunnel.json"), "pid": os.path.join(directory, "tunnel.pid"),
            "log": os.path.join(directory, "tunnel.log"), "known_hosts": os.path.join(directory, "known_hosts"),
            **{kind: os.path.join(directory, names[1]) for kind, names in MIGRATION_SOCKETS.items()}}


def running_tunnel(state_dir, vm_uuid):
    paths = tunnel_paths(state_dir, vm_uuid)
    return owned_process(paths["pid"], vm_dir(state_dir, vm_uuid))


def migration_tunnel(directory):
    """The source's side (a daemon): accept qemu's connections on migo.sock / nbdo.sock and carry
    each over its own `ssh` to the destination's relay."""
    config = read_json_file(os.path.join(directory, "tunnel.json"))
    if os.fork():
        return EXIT_OK  # the verb waits for this parent; the daemon lives on, adopted by init
    os.setsid()
    write_file_atomically(os.path.join(directory, "tunnel.pid"), f"{os.getpid()}\n")
    listeners = {}
    for kind, path in config["listen"].items():
        remove_file(path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(8)
        listeners[listener.fileno()] = (kind, listener)

    def carry(kind, connection):
        process = subprocess.Popen([*config["ssh"], f"{kind} {config['uuid']}"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, bufsize=0)
        with connection:
            outbound = threading.Thread(target=pump, daemon=True, args=(
                lambda: connection.recv(PUMP_CHUNK), lambda data: write_fd_all(process.stdin.fileno(), data),
                process.stdin.close))
            outbound.start()
            pump(lambda: process.stdout.read(PUMP_CHUNK), connection.sendall,
                 lambda: connection.shutdown(socket.SHUT_WR))
            outbound.join()
        process.wait()

    poller = select.poll()
    for fileno in listeners:
        poller.register(fileno, select.POLLIN)
    while True:
        for fileno, _ in poller.poll():
            kind, listener = listeners[fileno]
            connection, _ = listener.accept()
            threading.Thread(target=carry, args=(kind, connection), daemon=True).start()


def start_tunnel(state_dir, vm_uuid, destination):
    paths = tunnel_paths(state_dir, vm_uuid)
    if running_tunnel(state_dir, vm_uuid) is not None:
        return False
    address = destination["address"]
    known_host = address if destination["port"] == 22 else f"[{address}]:{destination['port']}"
    write_file_atomically(paths["known_hosts"], f"{known_host} {destination['host_key']}\n")
    ssh = ["ssh", "-F", "/dev/null", "-i", vm_migration_key_path(state_dir, vm_uuid), "-p", str(destination["port"]),
           "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
           "-o", f"UserKnownHostsFile={paths['known_hosts']}", "-o", "GlobalKnownHostsFile=/dev/null",
           "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5", "-o", "Compression=no",
           "-o", "UpdateHostKeys=no", "-o", "ControlMaster=no", "-o", "LogLevel=ERROR", f"root@{address}"]
    ssh[0] = find_binary("ssh")
    write_json_file(paths["config"], {"uuid": vm_uuid, "ssh": ssh,
                                      "listen": {kind: paths[kind] for kind in MIGRATION_SOCKETS}})
    with open(paths["log"], "ab") as log:
        launcher = subprocess.Popen([sys.executable, "-I", "-S", program_path(), "migration-tunnel",
                                     vm_dir(state_dir, vm_uuid)], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        launcher.wait(timeout=10)
    deadline = time.monotonic() + 10
    while not all(os.path.exists(paths[kind]) for kind in MIGRATION_SOCKETS) or \
            running_tunnel(state_dir, vm_uuid) is None:
        if time.monotonic() > deadline:
            raise HostsideError("command_failed", "the migration tunnel did not start",
                                stderr=tail_of_file(paths["log"]))
        time.sleep(0.02)
    return True


def stop_tunnel(state_dir, vm_uuid, changes):
    pid = running_tunnel(state_dir, vm_uuid)
    if pid is not None:
        # Its ssh children die with their stdin; the daemon's process group goes at once.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        wait_for_exit(pid, 5)
        changes.append("stopped the migration tunnel")
    paths = tunnel_paths(state_dir, vm_uuid)
    key = vm_migration_key_path(state_dir, vm_uuid)  # the next migration of this VM gets a new one
    for leftover in (paths["pid"], paths["config"], paths["known_hosts"], paths["migrate"], paths["nbd"], key,
                     key + ".pub"):
        remove_file(leftover)


def parse_destination(value):
    check_fields(value, ["address", "host_key"], ["port"])
    return {"address": str(check_ipv6_address(value["address"], "destination.address")),
            "port": check_int(value.get("port", 22), "destination.port", 1, 65535),
            "host_key": check_string(value["host_key"], "destination.host_key", SSH_PUBLIC_KEY_RE,
                                     "an OpenSSH public key")}


def verb_vm_incoming(spec):
    """vm-up for a guest that arrives: ports, taps and rules as vm-up makes them, then qemu with
    the same device model, paused (-S) and waiting (`-incoming defer`, then migrate-incoming on
    vms/<uuid>/mig.sock). Local writable qcow2 disks are exported writable over NBD on nbd.sock,
    for the source's mirror. A guest that already runs here (a repeated call) is left as it is."""
    vm_spec = {key: value for key, value in spec.items() if key != "expect_mirrored"}
    vm = parse_vm_up_spec(vm_spec)
    expected = check_list(spec.get("expect_mirrored", []), "expect_mirrored", 16)
    require_binaries("ip", "nft", QEMU_BINARY)
    state_dir, vm_uuid = vm["state_dir"], vm["uuid"]
    paths = vm_paths(state_dir, vm_uuid)
    exports = mirrored_drives(state_dir, vm["disks"])
    if sorted(exports) != sorted(expected):
        raise bad_spec(f"the source copies drives {expected}, this host would export {exports}")
    changes = []
    ensure_directory(paths["dir"])
    incoming = {kind: os.path.join(paths["dir"], names[0]) for kind, names in MIGRATION_SOCKETS.items()}
    with file_lock(os.path.join(paths["dir"], "vm-up.lock"), f"another vm-up of {vm_uuid} runs"):
        # As vm-up: a host that fenced itself takes no guest, nor a stale generation of one.
        refuse_stale_start(state_dir, vm_uuid, vm["generation"])
        pid = running_qemu(state_dir, vm_uuid)
        if pid is not None:
            status, qmp_error = qmp_status(paths["qmp"])
            return {"uuid": vm_uuid, "pid": pid, "status": status, "qmp_error": qmp_error, "exports": exports,
                    "already_running": True, "changes": changes}
        accel = resolve_accel(vm["accel"], state_dir)
        with host_lock(state_dir):
            require_networks_up(vm)
            write_json_file(paths["spec"], {**spec_for_disk(vm, accel), "incoming": True})
            record_ports(vm)
            ensure_taps(vm["nics"], changes)
            for stale in (paths["qmp"], paths["vnc"], paths["tty"], paths["pid"], *incoming.values()):
                remove_file(stale)
            argv = [*qemu_argv(vm, accel), "-S", "-incoming", "defer"]
            binary = find_binary(argv[0])
            process = subprocess.Popen([binary, *argv[1:]], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                if apply_ruleset(state_dir):
                    changes.append("applied nft rules")
            except BaseException:
                with contextlib.suppress(HostsideError):
                    stop_process(await_qemu(vm, argv, process))
                remove_ports_of_failed_start(vm)
                raise
        try:
            pid = await_qemu(vm, argv, process)
        except BaseException:
            with host_lock(state_dir):
                remove_ports_of_failed_start(vm)
            raise
        changes.append("started qemu waiting for the incoming guest")
        try:
            with QmpSession(paths["qmp"]) as qmp:
                if exports:
                    nodes = {entry["device"]: (entry.get("inserted") or {}).get("node-name")
                             for entry in qmp.execute("query-block")}
                    qmp.execute("nbd-server-start", {"addr": {"type": "unix", "data": {"path": incoming["nbd"]}}})
                    for drive in exports:
                        qmp.execute("block-export-add", {"type": "nbd", "id": f"export-{drive}", "name": drive,
                                                         "node-name": nodes[drive], "writable": True})
                qmp.execute("migrate-incoming", {"uri": f"unix:{incoming['migrate']}"})
        except (HostsideError, KeyError) as error:
            stop_process(pid)
            raise HostsideError("qemu_failed", f"the incoming guest could not be prepared: {error}") from None
    status, qmp_error = qmp_status(paths["qmp"])
    return {"uuid": vm_uuid, "pid": pid, "status": status, "qmp_error": qmp_error, "exports": exports,
            "already_running": False, "changes": changes}


def parse_migration_parameters(value):
    check_fields(value, [], ["downtime_ms", "max_downtime_ms", "bandwidth_mib", "auto_converge", "timeout_s",
                             "step_s", "mirror_timeout_s", "disks_only"])
    return {"downtime_ms": check_int(value.get("downtime_ms", 100), "downtime_ms", 1, 60000),
            "max_downtime_ms": check_int(value.get("max_downtime_ms", 2000), "max_downtime_ms", 1, 600000),
            "bandwidth_mib": check_int(value.get("bandwidth_mib", 0), "bandwidth_mib", 0, 1024 * 1024),
            "auto_converge": check_bool(value.get("auto_converge", True), "auto_converge"),
            "timeout_s": check_number(value.get("timeout_s", 240), "timeout_s", 1, 86400),
            "step_s": check_number(value.get("step_s", 10), "step_s", 0.5, 3600),
            "mirror_timeout_s": check_number(value.get("mirror_timeout_s", 120), "mirror_timeout_s", 1, 86400),
            # A cold move: the guest never ran, so its disks are all there is to send.
            "disks_only": check_bool(value.get("disks_only", False), "disks_only")}


def mirror_jobs(qmp):
    return {job["device"]: job for job in qmp.execute("query-block-jobs")
            if job["device"].startswith(MIRROR_JOB_PREFIX)}


def start_mirrors(qmp, paths, drives, changes):
    """A blockdev-mirror of each drive into the destination's NBD export (through the tunnel),
    unless one runs already; the targets are NBD nodes that connect when added."""
    jobs = mirror_jobs(qmp)
    nodes = {node["node-name"] for node in qmp.execute("query-named-block-nodes", {"flat": True})}
    for drive in drives:
        job, target = f"{MIRROR_JOB_PREFIX}-{drive}", f"{MIRROR_TARGET_PREFIX}-{drive}"
        if job in jobs:
            continue
        if target not in nodes:
            qmp.execute("blockdev-add", {"driver": "nbd", "node-name": target, "export": drive,
                                         "server": {"type": "unix", "path": paths["nbd"]}})
        # top: only what the overlay holds; the destination has the same base image (image-ensure).
        # write-blocking: once in step, a guest write is done when both copies have it, so little
        # is left to complete while the guest is paused before the switchover.
        qmp.execute("blockdev-mirror", {"job-id": job, "device": drive, "target": target, "sync": "top",
                                        "copy-mode": "write-blocking", "auto-finalize": True,
                                        "auto-dismiss": True})
        changes.append(f"mirroring {drive}")


def wait_for_mirrors(qmp, drives, timeout_s):
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = mirror_jobs(qmp)
        missing = [drive for drive in drives if f"{MIRROR_JOB_PREFIX}-{drive}" not in jobs]
        if missing:
            raise HostsideError("command_failed", f"the mirror of {', '.join(missing)} stopped",
                                details={"events": qmp.events[-10:]})
        if all(job.get("ready") for job in jobs.values()):
            return sum(int(job.get("offset", 0)) for job in jobs.values())
        if time.monotonic() > deadline:
            raise HostsideError("not_converged", f"the disk mirrors were not in step within {timeout_s:g} s")
        time.sleep(MIGRATION_POLL_S)


def complete_mirrors(qmp, changes, timeout_s=60):
    """The guest is paused before the switchover: each mirror is cancelled without force, which
    ends it once its last writes are on the destination (BLOCK_JOB_COMPLETED, a point-in-time copy).
    Returns the bytes the mirrors copied."""
    jobs = mirror_jobs(qmp)
    copied = sum(int(job.get("offset", 0)) for job in jobs.values())
    for job in jobs:
        qmp.execute("block-job-cancel", {"device": job}, allow_error=True)
    deadline = time.monotonic() + timeout_s
    while mirror_jobs(qmp):
        if time.monotonic() > deadline:
            raise HostsideError("not_converged", f"the disk mirrors did not complete within {timeout_s} s")
        time.sleep(0.005)
    if jobs:
        changes.append(f"completed {len(jobs)} mirror(s) before the switchover")
    return copied


def release_mirrors(qmp, drives, changes):
    """Cancel the mirrors (a READY mirror cancelled leaves both copies consistent; after the switch
    the destination's is the one in use) and remove their NBD target nodes."""
    for job in mirror_jobs(qmp):
        qmp.execute("block-job-cancel", {"device": job, "force": True}, allow_error=True)
        changes.append(f"cancelled {job}")
    deadline = time.monotonic() + 30
    while mirror_jobs(qmp) and time.monotonic() < deadline:
        time.sleep(0.05)
    nodes = {node["node-name"] for node in qmp.execute("query-named-block-nodes", {"flat": True})}
    for node in sorted(nodes):
        if node.startswith(MIRROR_TARGET_PREFIX):
            qmp.execute("blockdev-del", {"node-name": node}, allow_error=True)
            changes.append(f"removed {node}")


def migration_figures(info, mirror_bytes):
    ram = info.get("ram") or {}
    return {"migration_status": info.get("status"), "total_time_ms": info.get("total-time"),
            "downtime_ms": info.get("downtime"), "setup_time_ms": info.get("setup-time"),
            "ram_transferred_bytes": ram.get("transferred"), "ram_total_bytes": ram.get("total"),
            "mirror_bytes": mirror_bytes, "dirty_sync_count": ram.get("dirty-sync-count"),
            "error": info.get("error-desc")}


def verb_migrate_send(spec):
    """Send the running guest to the destination prepared by vm-incoming, and wait for the end.

    When the guest does not converge, the downtime limit doubles every step_s up to
    max_downtime_ms; at timeout_s the migration is cancelled and the guest runs on here
    (`not_converged`). Run again while a migration is under way or finished, it waits for (or
    reports) that one instead of starting another."""
    state_dir, vm_uuid, paths = migration_vm(spec, "destination", optional=["parameters"])
    destination = parse_destination(spec["destination"])
    parameters = parse_migration_parameters(spec.get("parameters") or {})
    require_binaries("ssh")
    running_migration_vm(state_dir, vm_uuid)
    recorded = read_json_file(paths["spec"]) or {}
    drives = mirrored_drives(state_dir, recorded.get("disks", []))
    tunnel = tunnel_paths(state_dir, vm_uuid)
    changes = []
    started = time.monotonic()
    with file_lock(os.path.join(paths["dir"], "migrate.lock"), f"a migration of {vm_uuid} runs"), \
            QmpSession(paths["qmp"], timeout_s=60) as qmp:
        info = qmp.execute("query-migrate")
        mirror_bytes = sum(int(job.get("offset", 0)) for job in mirror_jobs(qmp).values())
        # A guest that arrived here by migration also says "completed" (its incoming one) while it
        # runs: only a guest stopped by its own outgoing migration (postmigrate) has been sent.
        sent = info.get("status") == "completed" and qmp.execute("query-status")["status"] == "postmigrate"
        if sent:
            return {**migration_figures(info, mirror_bytes), "changes": changes}
        if info.get("status") not in ("active", "setup", "pre-switchover", "device"):
            if start_tunnel(state_dir, vm_uuid, destination):
                changes.append("started the migration tunnel")
            try:
                start_mirrors(qmp, tunnel, drives, changes)
                mirror_bytes = wait_for_mirrors(qmp, drives, parameters["mirror_timeout_s"])
            except HostsideError:
                abort_source(qmp, state_dir, vm_uuid, changes, resume=not parameters["disks_only"])
                raise
            if parameters["disks_only"]:
                if qmp.execute("query-status")["status"] == "running":
                    raise HostsideError("in_use", f"VM {vm_uuid} runs: only a guest that never ran moves its "
                                        "disks alone")
                # In step and nothing writes (the guest never ran): the copies are the same now.
                return {"migration_status": "disks-copied", "mirror_bytes": mirror_bytes,
                        "total_time_ms": round((time.monotonic() - started) * 1000), "changes": changes}
            # With disks mirrored the migration stops before the switchover (the guest is paused
            # then) so that the mirrors complete first: the destination may run its guest at once.
            capabilities = [{"capability": "auto-converge", "state": parameters["auto_converge"]},
                            {"capability": "events", "state": True},
                            {"capability": "pause-before-switchover", "state": bool(drives)}]
            qmp.execute("migrate-set-capabilities", {"capabilities": capabilities})
            # Both always set: qemu keeps what an earlier (failed) migration of this guest set.
            migrate_parameters = {"downtime-limit": parameters["downtime_ms"],
                                  "max-bandwidth": (parameters["bandwidth_mib"] or QEMU_DEFAULT_BANDWIDTH_MIB)
                                  * 1024 * 1024}
            qmp.execute("migrate-set-parameters", migrate_parameters)
            qmp.execute("migrate", {"uri": f"unix:{tunnel['migrate']}"})
            changes.append("migration started")
        downtime = parameters["downtime_ms"]
        # A repeated call may find the switchover under way. ("completed" here is an arrived
        # guest's incoming migration, or this one's just now: the poll says which.)
        switching = info.get("status") == "device"
        next_step = time.monotonic() + parameters["step_s"]
        deadline = started + parameters["timeout_s"]
        while True:
            info = qmp.execute("query-migrate")
            status = info.get("status")
            if status == "pre-switchover" and not switching:
                mirror_bytes = complete_mirrors(qmp, changes) or mirror_bytes
                # Once: the migration thread leaves pre-switchover a moment later, and a second
                # continue would find it in `device` (an error, though all is well; so is one by a
                # repeated migrate-send, which the poll then follows).
                qmp.execute("migrate-continue", {"state": "pre-switchover"}, allow_error=True)
                switching = True
                continue
            if status == "completed" and not info.get("total-time") and time.monotonic() < deadline:
                # QEMU says completed a moment before it has worked out its times (total-time and
                # downtime read 0 until then): the figures are what the operation publishes.
                time.sleep(0.01)
                continue
            if status == "completed":
                mirror_bytes = sum(int(job.get("offset", 0)) for job in mirror_jobs(qmp).values()) or mirror_bytes
                return {**migration_figures(info, mirror_bytes), "downtime_limit_ms": downtime,
                        "changes": changes}
            if status in ("failed", "cancelled"):
                abort_source(qmp, state_dir, vm_uuid, changes)
                raise HostsideError("migration_failed", f"the migration {status}: {info.get('error-desc', '')}",
                                    details={"figures": migration_figures(info, mirror_bytes)})
            now = time.monotonic()
            if now > deadline:
                abort_source(qmp, state_dir, vm_uuid, changes)
                raise HostsideError("not_converged", f"the guest did not converge within "
                                    f"{parameters['timeout_s']:g} s (downtime limit raised to {downtime} ms); "
                                    "it runs on here", details={"figures": migration_figures(info, mirror_bytes)})
            if now > next_step and downtime < parameters["max_downtime_ms"]:
                downtime = min(downtime * 2, parameters["max_downtime_ms"])
                qmp.execute("migrate-set-parameters", {"downtime-limit": downtime}, allow_error=True)
                changes.append(f"downtime limit raised to {downtime} ms")
                next_step = now + parameters["step_s"]
            time.sleep(MIGRATION_POLL_S)


def abort_source(qmp, state_dir, vm_uuid, changes, resume=True):
    """Undo a migration on the source: cancel it, cancel the mirrors, stop the tunnel, and let the
    guest run again if the migration had stopped it (unless `resume` is false: a cold move's
    guest never ran and must not start now)."""
    info = qmp.execute("query-migrate")
    if info.get("status") in ("active", "setup", "pre-switchover", "device"):
        qmp.execute("migrate_cancel", allow_error=True)
        deadline = time.monotonic() + 30
        while qmp.execute("query-migrate").get("status") not in ("cancelled", "failed", "completed") and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        changes.append("cancelled the migration")
    release_mirrors(qmp, [], changes)
    stop_tunnel(state_dir, vm_uuid, changes)
    status = qmp.execute("query-status")["status"]
    if resume and status in ("postmigrate", "paused", "finish-migrate"):
        qmp.execute("cont")
        changes.append(f"the guest runs again (was {status})")
    return qmp.execute("query-status")["status"]


def verb_migrate_abort(spec):
    state_dir, vm_uuid, paths = migration_vm(spec, optional=["resume"])
    resume = check_bool(spec.get("resume", True), "resume")
    changes = []
    if running_qemu(state_dir, vm_uuid) is None:
        stop_tunnel(state_dir, vm_uuid, changes)
        return {"uuid": vm_uuid, "status": "stopped", "changes": changes}
    with QmpSession(paths["qmp"]) as qmp:
        status = abort_source(qmp, state_dir, vm_uuid, changes, resume=resume)
    return {"uuid": vm_uuid, "status": status, "changes": changes}


def verb_migrate_source_release(spec):
    """After a completed migration: the mirrors cancelled, their targets removed, the tunnel down.
    The source qemu stays (paused, postmigrate) until vm-down."""
    state_dir, vm_uuid, paths = migration_vm(spec)
    changes = []
    if running_qemu(state_dir, vm_uuid) is not None:
        with QmpSession(paths["qmp"]) as qmp:
            status = qmp.execute("query-status")["status"]
            if status == "running":
                raise HostsideError("in_use", f"VM {vm_uuid} runs here: its migration did not complete")
            release_mirrors(qmp, [], changes)
    stop_tunnel(state_dir, vm_uuid, changes)
    return {"uuid": vm_uuid, "changes": changes}


def wait_for_arrival(paths, vm_uuid, wait_s):
    """Until the incoming guest is all here (paused), its migration failed, or wait_s ends. One
    connection asks every few ms (cheap: no handshake); the monitor takes one client at a time, so
    the watch lets go of it every ARRIVAL_HOLD_S and vm-status or vm-down (an abort) wait that long
    at most."""
    deadline = time.monotonic() + wait_s
    while True:
        with QmpSession(paths["qmp"]) as qmp:
            let_go = time.monotonic() + ARRIVAL_HOLD_S
            while time.monotonic() < let_go:
                if qmp.execute("query-status")["status"] != "inmigrate":
                    return
                time.sleep(ARRIVAL_POLL_S)
            incoming = qmp.execute("query-migrate").get("status")
        if incoming in ("failed", "cancelled"):
            raise HostsideError("migration_failed", f"the incoming migration of {vm_uuid} {incoming}")
        if time.monotonic() > deadline:
            raise HostsideError("busy", f"VM {vm_uuid} is still receiving its state")


def verb_migrate_finish(spec):
    """Destination, once the guest is all here: stop the NBD server, run the guest, and announce it
    (RARP + the guest's own announcement) so the VXLAN fabric learns where it is now. `wait_s`: wait
    that long for the guest to arrive (called alongside migrate-send, it continues the guest the
    moment it is here: nobody else's round trip is in the guest's pause). `run: false` (a cold
    move) leaves the guest paused: its disks are here now, it never ran."""
    state_dir, vm_uuid, paths = migration_vm(spec, optional=["run", "wait_s"])
    run = check_bool(spec.get("run", True), "run")
    wait_s = check_number(spec.get("wait_s", 0), "wait_s", 0, 86400)
    running_migration_vm(state_dir, vm_uuid)
    changes = []
    wait_for_arrival(paths, vm_uuid, wait_s)
    with QmpSession(paths["qmp"]) as qmp:
        status = qmp.execute("query-status")["status"]
        if status == "inmigrate":
            raise HostsideError("busy", f"VM {vm_uuid} is still receiving its state")
        if qmp.execute("nbd-server-stop", allow_error=True) == {}:
            changes.append("stopped the NBD server")
        if run and status in ("paused", "prelaunch"):
            qmp.execute("cont")
            changes.append("the guest runs here")
            qmp.execute("announce-self", ANNOUNCE)  # once: a repeated call finds it running
        status = qmp.execute("query-status")["status"]
    recorded = read_json_file(paths["spec"])
    if recorded and recorded.pop("incoming", None):
        write_json_file(paths["spec"], recorded)
    for kind in MIGRATION_SOCKETS:
        remove_file(os.path.join(paths["dir"], MIGRATION_SOCKETS[kind][0]))
    return {"uuid": vm_uuid, "status": status, "changes": changes}


MIGRATION_VERBS = {
    "migrate-source-prepare": verb_migrate_source_prepare,
    "migration-authorize": verb_migration_authorize,
    "migration-deauthorize": verb_migration_deauthorize,
    "vm-incoming": verb_vm_incoming,
    "migrate-send": verb_migrate_send,
    "migrate-source-release": verb_migrate_source_release,
    "migrate-finish": verb_migrate_finish,
    "migrate-abort": verb_migrate_abort,
}
