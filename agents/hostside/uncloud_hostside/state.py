"""Files, locks and processes under state_dir: atomic writes, the host lock, and the processes
we own (a pid file plus a marker on the command line)."""

import contextlib
import fcntl
import json
import os
import select
import signal
import time

from .errors import HostsideError
from .paths import host_lock_path

LOCK_TIMEOUT_S = 60


def ensure_directory(path):
    os.makedirs(path, mode=0o700, exist_ok=True)


def write_file_atomically(path, text):
    temporary = f"{path}.tmp"
    try:
        with open(temporary, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        remove_file(temporary)  # a full disk leaves no half-written file behind
        raise


def read_text(path):
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def read_json_file(path):
    text = read_text(path)
    return None if text is None else json.loads(text)


def write_json_file(path, data):
    write_file_atomically(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def remove_file(path):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@contextlib.contextmanager
def host_lock(state_dir):
    """One mutating verb at a time per state_dir: the nft table is rebuilt from files, and two
    concurrent rebuilds could otherwise drop each other's ports."""
    ensure_directory(state_dir)
    with file_lock(host_lock_path(state_dir), "another verb holds the host lock"):
        yield


@contextlib.contextmanager
def file_lock(path, busy_message):
    with open(path, "w") as lock_file:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HostsideError("timeout", busy_message) from None
                # Verbs hold the lock for tens of milliseconds: a short wait, so the next one in
                # line starts soon after the holder lets go.
                time.sleep(0.005)
        yield


def process_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def process_stat_fields(pid):
    """The fields of /proc/PID/stat after the command name: [state, ppid, ...], or None."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()


def process_is_alive(pid):
    """True for a live process; a zombie (an exited daemon nobody reaped yet) counts as gone."""
    fields = process_stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def parent_pid(pid):
    fields = process_stat_fields(pid)
    return int(fields[1]) if fields else None


def read_pid_file(path):
    text = read_text(path)
    if text is None or not text.strip().isdigit():
        return None
    return int(text.strip())


def owned_process(pid_file, marker):
    """The pid in pid_file when that process is alive and its command line names marker (a path
    below state_dir). Other test hosts share this process table, so a bare pid is not proof."""
    pid = read_pid_file(pid_file)
    if pid is None or not process_is_alive(pid):
        return None
    if not any(marker in argument for argument in process_cmdline(pid)):
        return None
    return pid


def wait_for_owned_process(pid_file, marker, what, timeout_s=5, log=None):
    """The pid of a daemon just started (it writes pid_file once it runs), or HostsideError."""
    deadline = time.monotonic() + timeout_s
    while (pid := owned_process(pid_file, marker)) is None:
        if time.monotonic() > deadline:
            raise HostsideError("command_failed", f"{what} did not stay up",
                                stderr=tail_of_file(log) if log else "", argv=[what])
        time.sleep(0.02)
    return pid


def wait_for_exit(pid, timeout_s):
    """True once pid has exited (a zombie counts). The process is seldom our child (qemu and radvd
    daemonize), so a pidfd is what wakes us the moment it exits, not the next tick of a poll."""
    deadline = time.monotonic() + timeout_s
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):  # Python < 3.9 or kernel < 5.3: poll
        pidfd = None
    try:
        poller = None
        if pidfd is not None:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
        while process_is_alive(pid):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if poller is None:
                time.sleep(min(remaining, 0.02))
            else:
                poller.poll(min(remaining, 1.0) * 1000)
        return True
    finally:
        if pidfd is not None:
            os.close(pidfd)


def send_signal(pid, signal_number):
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal_number)


def stop_process(pid, term_wait_s=5):
    send_signal(pid, signal.SIGTERM)
    if not wait_for_exit(pid, term_wait_s):
        send_signal(pid, signal.SIGKILL)
        wait_for_exit(pid, 5)


def tail_of_file(path, max_bytes=4000):
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - max_bytes))
            return handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
