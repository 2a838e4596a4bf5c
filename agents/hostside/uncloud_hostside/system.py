"""Host commands: argument lists run without a shell, the binaries they need, what the kernel says
about links, and whether KVM works."""

import json
import os
import shutil
import subprocess

from .errors import HostsideError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
QEMU_BINARY = "qemu-system-x86_64"
COMMAND_TIMEOUT_S = 30


def search_path():
    return os.environ.get("PATH") or DEFAULT_PATH


def find_binary(name):
    return shutil.which(name, path=search_path())


def require_binaries(*names):
    missing = [name for name in names if find_binary(name) is None]
    if missing:
        raise HostsideError("missing_binary", f"not installed on this host: {', '.join(missing)}",
                            details={"missing": missing})


def looks_like_disk_full(text):
    return "No space left on device" in text or "Disk quota exceeded" in text


def run_command(argv, *, input_text=None, timeout=COMMAND_TIMEOUT_S, check=True):
    binary = find_binary(argv[0])
    if binary is None:
        raise HostsideError("missing_binary", f"not installed on this host: {argv[0]}",
                            argv=argv, details={"missing": [argv[0]]})
    try:
        completed = subprocess.run([binary, *argv[1:]], input=input_text, capture_output=True,
                                   text=True, timeout=timeout, stdin=None if input_text is not None
                                   else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise HostsideError("timeout", f"{argv[0]} did not finish within {timeout} s",
                            argv=argv) from None
    if check and completed.returncode != 0:
        raise command_failure(argv, completed)
    return completed


def command_failure(argv, completed):
    stderr = (completed.stderr or "") + (completed.stdout or "")
    if looks_like_disk_full(stderr):
        return HostsideError("disk_full", f"{argv[0]} ran out of disk space", stderr=stderr, argv=argv)
    return HostsideError("command_failed", f"{argv[0]} exited with status {completed.returncode}",
                         stderr=stderr, argv=argv)


def ip_json(*args):
    """`ip -j -d ...` parsed, or None when the device does not exist."""
    completed = run_command(["ip", "-j", "-d", *args], check=False)
    if completed.returncode != 0:
        if "does not exist" in completed.stderr or "Cannot find device" in completed.stderr:
            return None
        raise command_failure(["ip", "-j", "-d", *args], completed)
    return json.loads(completed.stdout or "[]")


def link_info(name):
    links = ip_json("link", "show", "dev", name)
    return links[0] if links else None


def link_kind(link):
    return link.get("linkinfo", {}).get("info_kind")


def write_interface_sysctl(interface, key, value):
    # /proc/sys/net belongs to the network namespace this program runs in.
    with open(f"/proc/sys/net/ipv6/conf/{interface}/{key}", "w") as sysctl_file:
        sysctl_file.write(f"{value}\n")


def qemu_error_lines(output):
    """qemu's own complaints ("qemu-system-x86_64: ..."), first; other lines after them."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    own = [line for line in lines if line.startswith(f"{QEMU_BINARY}:")]
    return own + [line for line in lines if line not in own]
