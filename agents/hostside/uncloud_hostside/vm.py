"""vm-up / vm-down / vm-status / vm-reboot: qemu started directly, guarded by nftables before it runs."""

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import time

from .addressing import bridge_name
from .checks import check_bool, check_fields, check_number, check_state_dir, check_uuid
from .errors import HostsideError
from .guests import running_qemu, vm_status
from .ha import refuse_stale_start
from .nft import apply_ruleset, load_port_states
from .paths import port_state_path, ports_dir, vm_paths
from .qmp import qmp_execute, qmp_run, qmp_status
from .state import (
    ensure_directory,
    file_lock,
    host_lock,
    process_is_alive,
    read_json_file,
    read_text,
    remove_file,
    send_signal,
    stop_process,
    tail_of_file,
    wait_for_exit,
    write_json_file,
)
from .system import (
    QEMU_BINARY,
    find_binary,
    looks_like_disk_full,
    qemu_error_lines,
    require_binaries,
    run_command,
    write_interface_sysctl,
)
from .vmspec import load_network_state, parse_vm_up_spec, qemu_argv, resolve_accel

QEMU_START_TIMEOUT_S = 60


def record_ports(vm):
    state_dir = vm["state_dir"]
    ensure_directory(ports_dir(state_dir))
    for nic in vm["nics"]:
        existing = read_json_file(port_state_path(state_dir, nic["tap"]))
        if existing is not None and existing["vm_uuid"] != vm["uuid"]:
            raise HostsideError("in_use", f"tap {nic['tap']} belongs to VM {existing['vm_uuid']}")
        write_json_file(port_state_path(state_dir, nic["tap"]), {
            "tap": nic["tap"], "vm_uuid": vm["uuid"], "mac": nic["mac"], "vni": nic["vni"],
            "ipv6": nic["ipv6"], "link_local": nic["link_local"], "index": nic["index"],
            "security_group_ingress": nic["ingress"],
        })


def sysfs_link(name):
    """What vm-up needs to know about a link, read from /sys (no process to start), or None.
    /sys/class/net shows the network namespace this program runs in (ip netns exec remounts it)."""
    base = f"/sys/class/net/{name}"
    mtu, flags = read_text(f"{base}/mtu"), read_text(f"{base}/flags")
    if mtu is None or flags is None:
        return None
    mtu, flags = int(mtu), int(flags, 16)
    master = os.path.realpath(f"{base}/master") if os.path.lexists(f"{base}/master") else None
    return {"is_tap": os.path.exists(f"{base}/tun_flags"), "mtu": mtu, "up": bool(flags & 0x1),
            "master": os.path.basename(master) if master else None}


def bridge_port_learns(tap):
    """Whether the bridge learns source MACs on this port (True for a port just attached)."""
    return read_text(f"/sys/class/net/{tap}/brport/learning") != "0\n"


def ensure_taps(nics, changes):
    """Each NIC's tap on its bridge with the bridge's MTU, up, with no IPv6 of its own, and with
    its MAC as the port's only, static, forwarding entry: the bridge learns nothing on a guest's
    port, so frames from a forged source MAC (which the guard drops only after the bridge would
    have learned them) never move another guest's entry here. Costs at most two `ip` runs and one
    `bridge` run for any number of NICs, and only the `ip` batch when nothing is missing."""
    missing = []
    for nic in nics:
        link = sysfs_link(nic["tap"])
        if link is not None and not link["is_tap"]:
            raise HostsideError("in_use", f"{nic['tap']} exists and is not a tap device")
        if link is None:
            missing.append(nic["tap"])
    if missing:
        run_command(["ip", "-batch", "-"], input_text="".join(
            f"tuntap add dev {tap} mode tap\n" for tap in missing))
        changes.extend(f"created {tap}" for tap in missing)
    batch, forwarding = [], []
    for nic in nics:
        tap, bridge = nic["tap"], bridge_name(nic["vni"])
        # The host itself has nothing to say on a guest's port (before it goes up: no link-local).
        write_interface_sysctl(tap, "disable_ipv6", 1)
        link, bridge_link = sysfs_link(tap), sysfs_link(bridge)
        if link["master"] != bridge:
            batch.append(f"link set dev {tap} master {bridge}")
            changes.append(f"attached {tap} to {bridge}")
        if link["mtu"] != bridge_link["mtu"]:
            batch.append(f"link set dev {tap} mtu {bridge_link['mtu']}")
        if link["master"] != bridge or bridge_port_learns(tap):
            batch.append(f"link set dev {tap} type bridge_slave learning off")
            forwarding.append(f"fdb replace {nic['mac']} dev {tap} master static")
        if not link["up"]:
            batch.append(f"link set dev {tap} up")
    if batch:
        # Tap and bridge names are checked against TAP_NAME_RE / bridge_name(): no spaces, no
        # quotes, so each batch line has exactly the words written here.
        run_command(["ip", "-batch", "-"], input_text="\n".join(batch) + "\n")
    if forwarding:
        # MACs are checked against MAC_RE: again no spaces or quotes.
        run_command(["bridge", "-batch", "-"], input_text="\n".join(forwarding) + "\n")


def require_networks_up(vm):
    for nic in vm["nics"]:
        if load_network_state(vm["state_dir"], nic["vni"]) is None or \
                sysfs_link(bridge_name(nic["vni"])) is None:
            raise HostsideError("not_found", f"network vni {nic['vni']} is not up on this host "
                                "(run net-up first)")


def launch_qemu_paused(vm, accel):
    """Start qemu with its CPUs stopped (-S) and return without waiting: it initialises while the
    caller applies the guest's nft rules. The guest runs no instruction before `cont`."""
    paths = vm_paths(vm["state_dir"], vm["uuid"])
    for stale in (paths["qmp"], paths["vnc"], paths["tty"], paths["pid"]):
        remove_file(stale)
    argv = [*qemu_argv(vm, accel), "-S"]
    binary = find_binary(argv[0])
    if binary is None:
        raise HostsideError("missing_binary", f"not installed on this host: {argv[0]}",
                            argv=argv, details={"missing": [argv[0]]})
    process = subprocess.Popen([binary, *argv[1:]], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return argv, process


def await_qemu(vm, argv, process):
    """Wait until qemu -daemonize has initialised (its parent exits) and return the guest's pid."""
    paths = vm_paths(vm["state_dir"], vm["uuid"])
    try:
        stdout, stderr = process.communicate(timeout=QEMU_START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise HostsideError("timeout", f"qemu did not start within {QEMU_START_TIMEOUT_S} s",
                            stderr=stderr, argv=argv) from None
    if process.returncode != 0:
        output = stderr + stdout
        code = "disk_full" if looks_like_disk_full(output) else "qemu_failed"
        # qemu's own words lead the message: they are what a person needs (the command line and
        # the rest of stderr follow in the error's details).
        said = qemu_error_lines(output)[:1]
        message = said[0] if said else f"qemu exited with status {process.returncode}"
        raise HostsideError(code, f"qemu failed to start: {message}", stderr=output,
                            argv=argv, details={"serial_tail": tail_of_file(paths["serial"])})
    pid = running_qemu(vm["state_dir"], vm["uuid"])
    if pid is None:
        raise HostsideError("qemu_failed", "qemu exited right after starting", stderr=stderr,
                            argv=argv, details={"serial_tail": tail_of_file(paths["serial"])})
    return pid


def start_guarded_qemu(vm, accel, changes):
    """qemu and the nft rules in parallel; the guest starts only once its rules are in place.
    Returns (argv, process) once the rules are in: the caller awaits qemu (await_qemu)."""
    argv, process = launch_qemu_paused(vm, accel)
    try:
        if apply_ruleset(vm["state_dir"]):
            changes.append("applied nft rules")
    except BaseException:
        with contextlib.suppress(HostsideError):
            stop_process(await_qemu(vm, argv, process))
        raise
    return argv, process


def continue_guest(vm):
    """Let a guest that waits in prelaunch (started with -S) run; answer its QMP status."""
    paths = vm_paths(vm["state_dir"], vm["uuid"])
    status, qmp_error = qmp_status(paths["qmp"])
    if status == "prelaunch":
        try:
            # One connection for both: each QMP connection is a greeting and a handshake.
            status = qmp_run(paths["qmp"], [("cont", None), ("query-status", None)])["status"]
        except HostsideError as error:
            return status, error.message
    return status, qmp_error


def spec_for_disk(vm, accel):
    return {key: vm[key] for key in ("uuid", "name", "cores", "memory_mib", "disks", "nics",
                                     "kernel", "initrd", "cmdline", "generation")} | {"accel": accel}


def remove_ports_of_failed_start(vm):
    """After qemu failed to start (or its rules were refused): the VM's taps and port files go
    again, so no tap of a guest that never ran stays on a bridge. Called under the host lock, and
    only when this vm-up found no qemu of the VM running (a running guest's taps are never
    touched). Best effort: the start's own error is what the caller reports."""
    if running_qemu(vm["state_dir"], vm["uuid"]) is not None:
        return
    with contextlib.suppress(HostsideError, OSError):
        for nic in vm["nics"]:
            remove_port(vm["state_dir"], nic["tap"], [])
        apply_ruleset(vm["state_dir"])


def verb_vm_up(spec):
    vm = parse_vm_up_spec(spec)
    require_binaries("ip", "nft", QEMU_BINARY)
    state_dir, vm_uuid = vm["state_dir"], vm["uuid"]
    paths = vm_paths(state_dir, vm_uuid)
    changes = []
    ensure_directory(paths["dir"])
    # The VM's own lock covers "no qemu runs" until its pid file exists, so two vm-ups never
    # start two; the host lock covers only ports, taps and rules, and the host's other verbs go
    # on while this qemu initialises.
    with file_lock(paths["lock"], f"another vm-up of {vm_uuid} runs"):
        refuse_stale_start(state_dir, vm_uuid, vm["generation"])
        with host_lock(state_dir):
            require_networks_up(vm)
            pid = running_qemu(state_dir, vm_uuid)
            accel = resolve_accel(vm["accel"], state_dir)
            already_running = pid is not None
            if not already_running:
                write_json_file(paths["spec"], spec_for_disk(vm, accel))
            elif vm["generation"] is not None:
                # The same guest, now owned by a newer start: it is no stale copy.
                recorded = read_json_file(paths["spec"]) or {}
                if (recorded.get("generation") or 0) < vm["generation"]:
                    write_json_file(paths["spec"], {**recorded, "generation": vm["generation"]})
            # Port files, taps, then qemu paused while the rules go in; `cont` only after both, so
            # the guest's first frame already meets its guard.
            record_ports(vm)
            ensure_taps(vm["nics"], changes)
            if already_running:
                if apply_ruleset(state_dir):
                    changes.append("applied nft rules")
            else:
                try:
                    starting = start_guarded_qemu(vm, accel, changes)
                except BaseException:
                    remove_ports_of_failed_start(vm)
                    raise
        if not already_running:
            try:
                pid = await_qemu(vm, *starting)
            except BaseException:
                with host_lock(state_dir):
                    remove_ports_of_failed_start(vm)
                raise
            changes.append("started qemu")
        status, qmp_error = qmp_status(paths["qmp"]) if vm["paused"] else continue_guest(vm)
    recorded = read_json_file(paths["spec"]) or {}
    return {"uuid": vm_uuid, "name": vm["name"], "pid": pid, "status": status,
            "qmp_error": qmp_error, "already_running": already_running,
            "accel": recorded.get("accel", accel),
            "taps": [nic["tap"] for nic in vm["nics"]], "qmp_socket": paths["qmp"],
            "vnc_socket": paths["vnc"], "serial_log": paths["serial"], "changes": changes}


def remove_port(state_dir, tap, changes):
    """A guest port's tap and its port file (its rules go with the next apply_ruleset)."""
    link = sysfs_link(tap)
    if link is not None and link["is_tap"]:
        run_command(["ip", "link", "del", "dev", tap])
        changes.append(f"deleted {tap}")
    if os.path.exists(port_state_path(state_dir, tap)):
        remove_file(port_state_path(state_dir, tap))
        changes.append(f"removed port {tap}")


def vm_taps(state_dir, vm_uuid):
    """Taps of a VM: from its port files, and from its recorded spec in case a port file is gone."""
    taps = {port["tap"] for port in load_port_states(state_dir) if port["vm_uuid"] == vm_uuid}
    recorded = read_json_file(vm_paths(state_dir, vm_uuid)["spec"]) or {}
    taps.update(nic["tap"] for nic in recorded.get("nics", []))
    return sorted(taps)


def shut_down_qemu(state_dir, vm_uuid, timeout_s, hard, discard=False):
    """discard: the VM's disks are deleted next, so there is nothing for qemu to flush on a
    SIGTERM: a hard stop is SIGKILL at once."""
    paths = vm_paths(state_dir, vm_uuid)
    pid = running_qemu(state_dir, vm_uuid)
    if pid is None:
        return "already_stopped"
    if not hard:
        with contextlib.suppress(HostsideError):
            qmp_execute(paths["qmp"], "system_powerdown")
        if wait_for_exit(pid, timeout_s):
            return "powerdown"
    if discard:
        send_signal(pid, signal.SIGKILL)
        wait_for_exit(pid, 5)
    else:
        stop_process(pid)
    if process_is_alive(pid):
        raise HostsideError("timeout", f"qemu pid {pid} did not die")
    return "killed"


def remove_vm_directory(directory):
    """rmtree, again when a file appeared or went meanwhile: the heartbeat (not under the host lock,
    so it never waits behind a verb) may be writing the VM's generation file right then."""
    for attempt in range(5):
        if not os.path.isdir(directory):
            return
        try:
            shutil.rmtree(directory)
            return
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.ENOENT) or attempt == 4:
                raise
            time.sleep(0.05)


def verb_vm_down(spec):
    check_fields(spec, ["state_dir", "uuid"], ["timeout_s", "hard", "purge"])
    state_dir = check_state_dir(spec["state_dir"])
    vm_uuid = check_uuid(spec["uuid"])
    timeout_s = check_number(spec.get("timeout_s", 30), "timeout_s", 0, 600)
    hard = check_bool(spec.get("hard", False), "hard")
    purge = check_bool(spec.get("purge", False), "purge")
    require_binaries("ip", "nft")
    ensure_directory(state_dir)
    # Waiting for the guest happens outside the host lock so other verbs are not held up.
    # A Ceph disk outlives its VM's qemu by a watch that only a clean close ends (a SIGKILLed qemu
    # leaves it for the OSD's 30 s watch timeout, and `rbd rm` refuses the image until then): a
    # VM with rbd disks gets SIGTERM even when it is being deleted.
    recorded = read_json_file(vm_paths(state_dir, vm_uuid)["spec"]) or {}
    on_ceph = any(str(disk.get("path", "")).startswith("rbd:") for disk in recorded.get("disks", []))
    stopped_by = shut_down_qemu(state_dir, vm_uuid, timeout_s, hard, discard=purge and not on_ceph)
    changes = []
    with host_lock(state_dir):
        for tap in vm_taps(state_dir, vm_uuid):
            remove_port(state_dir, tap, changes)
        if apply_ruleset(state_dir):
            changes.append("applied nft rules")
        paths = vm_paths(state_dir, vm_uuid)
        for runtime_file in (paths["qmp"], paths["vnc"], paths["tty"], paths["pid"]):
            if os.path.exists(runtime_file):
                remove_file(runtime_file)
                changes.append(f"removed {os.path.basename(runtime_file)}")
        if purge and os.path.isdir(paths["dir"]):
            # The VM is deleted: its spec and serial log go too, so inventory forgets it.
            remove_vm_directory(paths["dir"])
            changes.append("removed the VM directory")
    return {"uuid": vm_uuid, "stopped_by": stopped_by, "changes": changes}


def verb_vm_status(spec):
    check_fields(spec, ["state_dir", "uuid"])
    state_dir = check_state_dir(spec["state_dir"])
    vm_uuid = check_uuid(spec["uuid"])
    recorded = read_json_file(vm_paths(state_dir, vm_uuid)["spec"]) or {}
    return {**vm_status(state_dir, vm_uuid), "name": recorded.get("name"),
            "known": bool(recorded)}


def verb_vm_reboot(spec):
    """QMP system_reset: a hard reset, like the reset button (an OS that ignores ACPI still
    reboots). A VM that is not running is `not_found`: rebooting it would be starting it."""
    check_fields(spec, ["state_dir", "uuid"])
    state_dir = check_state_dir(spec["state_dir"])
    vm_uuid = check_uuid(spec["uuid"])
    paths = vm_paths(state_dir, vm_uuid)
    pid = running_qemu(state_dir, vm_uuid)
    if pid is None:
        raise HostsideError("not_found", f"VM {vm_uuid} is not running on this host")
    qmp_execute(paths["qmp"], "system_reset")
    status, qmp_error = continue_guest({"state_dir": state_dir, "uuid": vm_uuid})
    return {"uuid": vm_uuid, "pid": pid, "status": status, "qmp_error": qmp_error}
