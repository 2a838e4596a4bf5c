"""host-info: what this hypervisor has (binaries, KVM, cores, memory, disk) and which program
answers."""

import os
import sys

from .checks import check_bool, check_fields, check_state_dir
from .kvm import kvm_facts, kvm_probe_cached
from .program import program_checksum
from .state import ensure_directory, read_text
from .system import QEMU_BINARY, find_binary

VERSION = "1"

HOST_BINARIES = ("ip", "nft", "radvd", QEMU_BINARY, "qemu-img")


def memory_mib():
    values = {}
    for line in read_text("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0]) // 1024
    return {"total": values.get("MemTotal"), "available": values.get("MemAvailable")}


def verb_host_info(spec):
    """probe_kvm: start the KVM test guest again (the host check does); otherwise the result of
    this boot's last probe is reported (made now if there is none), which keeps host-info cheap."""
    check_fields(spec, ["state_dir"], ["probe_kvm"])
    state_dir = check_state_dir(spec["state_dir"])
    probe_again = check_bool(spec.get("probe_kvm", False), "probe_kvm")
    ensure_directory(state_dir)
    disk = os.statvfs(state_dir)
    return {
        "version": VERSION,
        "sha256": program_checksum(),
        "python": sys.version.split()[0],
        "binaries": {name: find_binary(name) for name in HOST_BINARIES},
        **kvm_facts(kvm_probe_cached(state_dir, fresh=probe_again)),
        "cores": os.cpu_count(),
        "memory_mib": memory_mib(),
        "state_dir": state_dir,
        "disk_free_bytes": disk.f_bavail * disk.f_frsize,
        "disk_total_bytes": disk.f_blocks * disk.f_frsize,
        "pid": os.getpid(),  # of the process that answered (a long-lived `serve` one, usually)
    }
