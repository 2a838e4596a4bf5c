"""Whether guests can really run with KVM here: /dev/kvm opening is no proof (a nested KVM without
vmx/svm opens fine), so a throw-away guest is started, and its result cached per boot and qemu.
"""

import contextlib
import fcntl
import os
import subprocess
import time

from .paths import kvm_probe_path
from .qmp import QmpStdio
from .state import read_json_file, read_text, write_json_file
from .system import QEMU_BINARY, find_binary, qemu_error_lines

KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
KVM_PROBE_RUN_S = 0.5
KVM_PROBE_TIMEOUT_S = 20


def kvm_device_opens():
    """None when /dev/kvm opens and speaks the stable API, else why not."""
    try:
        descriptor = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as error:
        return f"/dev/kvm: {error.strerror}"
    try:
        version = fcntl.ioctl(descriptor, KVM_GET_API_VERSION)
    except OSError as error:
        return f"/dev/kvm: KVM_GET_API_VERSION: {error.strerror}"
    finally:
        os.close(descriptor)
    return None if version == KVM_API_VERSION else f"/dev/kvm speaks KVM API {version}, not {KVM_API_VERSION}"


def kvm_probe_guest(accel="kvm"):
    """Start a throw-away guest with accel=kvm (no disk, no NIC, 32 MiB) and let its firmware run
    for KVM_PROBE_RUN_S: (True, why) when it still runs, else (False, qemu's own words). A /dev/kvm
    that opens proves nothing: a nested KVM without vmx/svm opens fine and qemu then dies with
    'failed to set MSR 0x10a' as soon as it loads the vCPU registers."""
    binary = find_binary(QEMU_BINARY)
    if binary is None:
        return False, f"{QEMU_BINARY} is not installed"
    # accel is a parameter only so a test can prove on any machine that a guest that does run is
    # recognised (with tcg).
    cpu = ["-cpu", "host"] if accel == "kvm" else []
    argv = [binary, "-machine", f"q35,accel={accel}", *cpu, "-m", "32", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-S", "-qmp", "stdio"]
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    qmp = QmpStdio(process, time.monotonic() + KVM_PROBE_TIMEOUT_S)
    try:
        qmp.answer()  # the greeting
        qmp.command("qmp_capabilities")
        qmp.command("cont")
        time.sleep(KVM_PROBE_RUN_S)
        status = qmp.command("query-status").get("return", {}).get("status")
        if status != "running":
            return False, f"a {accel} test guest stopped with status {status}"
        return True, f"a {accel} test guest ran for {KVM_PROBE_RUN_S} s"
    except TimeoutError:
        return False, f"a {accel} test guest did not answer within {KVM_PROBE_TIMEOUT_S} s"
    except (EOFError, OSError, ValueError):
        process.kill()
        stderr = process.communicate(timeout=10)[1].decode(errors="replace").strip()
        first_error = qemu_error_lines(stderr)[:1] or [f"qemu exited with status {process.returncode}"]
        return False, f"a {accel} test guest died: {first_error[0]}"
    finally:
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired, ValueError, OSError):
            process.communicate(timeout=10)


def kvm_without_hardware_virtualisation():
    """Why KVM here cannot run real guests though a test guest runs, or None.

    kvm-pvm (KVM by page tables, for machines without vmx/svm) runs a guest's firmware, so the test
    guest passes; but the guest's boot loader (syslinux, on the demo guest's disk) stops with
    'kvm-pvm: INTERNAL_ERROR in batch emul' and qemu's status internal-error, never printing a line.
    Seen on this project's CI machines in December 2026."""
    loaded = {name for name in ("kvm_pvm", "kvm_intel", "kvm_amd") if os.path.isdir(f"/sys/module/{name}")}
    if "kvm_pvm" in loaded and not loaded & {"kvm_intel", "kvm_amd"}:
        return ("KVM here is kvm-pvm (no vmx/svm): guests' boot loaders stop with a KVM internal error, "
                "so guests run with TCG")
    return None


def kvm_probe():
    """{"usable": bool, "reason": str}: whether guests can really run with accel=kvm here."""
    reason = kvm_device_opens() or kvm_without_hardware_virtualisation()
    if reason is not None:
        return {"usable": False, "reason": reason}
    usable, reason = kvm_probe_guest()
    return {"usable": usable, "reason": reason}


def kvm_probe_identity():
    """What a cached probe is valid for: this boot (modules, nesting) and this qemu binary."""
    binary = find_binary(QEMU_BINARY)
    try:
        qemu = os.stat(binary) if binary else None
    except OSError:
        qemu = None
    return {"boot_id": (read_text("/proc/sys/kernel/random/boot_id") or "").strip(),
            "qemu": [binary, qemu.st_mtime_ns, qemu.st_size] if qemu else None,
            # A probe cached before kvm-pvm was recognised said "usable": such a cache is not this one.
            "probe": 2}


def kvm_probe_cached(state_dir, fresh=False):
    """The probe's result, run again when asked (host-info) or when the boot or qemu changed;
    vm-up with accel auto reads it, so a VM start pays for a probe at most once per boot."""
    path = kvm_probe_path(state_dir)
    identity = kvm_probe_identity()
    cached = read_json_file(path)
    if not fresh and isinstance(cached, dict) and cached.get("identity") == identity:
        return cached["result"]
    result = kvm_probe()
    write_json_file(path, {"identity": identity, "result": result})
    return result


def kvm_facts(probe):
    return {"kvm_usable": probe["usable"], "kvm_reason": probe["reason"]}
