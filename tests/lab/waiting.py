"""Waiting in tests: one wait_for for any condition, one wait_for_line for a log a guest or a daemon
writes. Both fail with what they saw at the deadline (a callable message is asked then, not before)."""

import re
import socket
import time
from pathlib import Path


def wait_for(predicate, timeout=60, log_paths=(), message="timed out", interval=0.2):
    """predicate() until it is true (its value is returned), at most timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    logs = "".join(f"\n--- {path}:\n{Path(path).read_text(errors='replace')[-4000:]}"
                   for path in log_paths if Path(path).exists())
    raise AssertionError((message() if callable(message) else message) + logs)


def wait_for_line(path, pattern, timeout, *, alive=None):
    """The first whole line of the file at path that starts with `pattern` (a string) or matches it
    (a compiled regex: its match object is returned), waiting for it to be written. `alive`, when
    given, is asked each round; once it is false (the writer died) there is no point waiting."""

    def read():
        try:
            return Path(path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def found():
        # Only whole lines: the writer may be in the middle of the last one.
        for line in read().splitlines(keepends=True):
            if not line.endswith("\n"):
                continue
            if isinstance(pattern, re.Pattern):
                match = pattern.search(line)
                if match:
                    return match
            elif line.strip().startswith(pattern):
                return line.strip()
        if alive is not None and not alive():
            raise AssertionError(f"the writer of {path} ended before {pattern!r}; tail:\n{read()[-2000:]}")
        return None

    what = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
    return wait_for(found, timeout=timeout,
                    message=lambda: f"no {what!r} in {path} after {timeout} s; tail:\n{read()[-2000:]}")


def wait_until_listening(process, port, name, timeout=10):
    """A daemon we started (a Popen) accepts TCP on 127.0.0.1:port; it dying first is an error."""

    def listening():
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited: {process.stderr.read().decode(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return False
        return True

    wait_for(listening, timeout=timeout, interval=0.02, message=f"{name} did not start listening")
