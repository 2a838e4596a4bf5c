"""Calls the host-side program (agents/hostside/) on a hypervisor and turns its answers into errors
the Operation engine understands. No Django here either.
"""

import contextlib
import contextvars
import hashlib
import json
import sys
import threading
from functools import lru_cache

from agents.hostside.build import build_zipapp
from agents.transport import HostConnection, LineStream, StreamClosed, TransportError, transport_for

REMOTE_PYTHON = "/usr/bin/python3"

# The operation step this thread is running, sent with each of its host calls: a host refuses a call
# from a step older than one of the same target it already heard of (its worker lost the operation).
_holder: contextvars.ContextVar[dict | None] = contextvars.ContextVar("uncloud_holder", default=None)


@contextlib.contextmanager
def acting_for(target_uuid, claim: int | None):
    """Host calls made inside carry this step's claim on the target (Operation.holder_token): a
    claim outranks every earlier claim on the same target, so a worker that lost its operation is
    refused once its successor reached the host, and no clock (stepped back by NTP, or behind on
    another worker's machine) can make current work look older than what came before."""
    if target_uuid is None or claim is None:
        yield
        return
    token = _holder.set({"target": str(target_uuid), "token": claim})
    try:
        yield
    finally:
        _holder.reset(token)

# Codes the host-side program answers with that are worth retrying.
TRANSIENT_CODES = {"timeout", "busy"}


class HostError(Exception):
    """The host-side program ran and reported a failure (structured, with the host's stderr)."""

    def __init__(self, code: str, message: str, *, stderr: str = "", argv=None, host: str = "", extra=None):
        super().__init__(f"{host}: {message}" if host else message)
        self.code = code
        self.stderr = stderr
        self.argv = argv or []
        self.transient = code in TRANSIENT_CODES
        # The answer's other fields: e.g. batch_index, batch_verb, batch_results of a failed batch.
        self.extra = extra or {}

    @property
    def verb(self) -> str | None:
        """Which verb of a batch failed (None for a single call)."""
        return self.extra.get("batch_verb")

    def details(self) -> str:
        # The program's own words before the command line: a cut-off view still shows why.
        lines = []
        if self.stderr:
            lines.append("stderr: " + self.stderr.strip()[-2000:])
        if self.argv:
            lines.append("command: " + " ".join(self.argv))
        return "\n".join(lines)


# (connection, program path) pairs known to hold the right program in this process. Agents are
# made per workflow step; without this, every step would pay an extra sha256sum round trip.
_shipped: set[tuple[HostConnection, str]] = set()
_shipped_lock = threading.Lock()


# Idle `serve` processes per (connection, program path). A call takes one (or starts one), and
# gives it back after a complete answer; a stream that failed mid-call is closed, never reused.
_idle_streams: dict[tuple[HostConnection, str], list[LineStream]] = {}
_streams_lock = threading.Lock()


def close_streams() -> None:
    with _streams_lock:
        streams = [stream for idle in _idle_streams.values() for stream in idle]
        _idle_streams.clear()
    for stream in streams:
        stream.close()


@lru_cache(maxsize=1)
def hostside_program() -> tuple[bytes, str]:
    """The host-side program as the one artifact every host gets (a reproducible zipapp of
    agents/hostside/uncloud_hostside/) and its sha256."""
    data = build_zipapp()
    return data, hashlib.sha256(data).hexdigest()


class HostAgent:
    def __init__(self, connection: HostConnection, state_dir: str, give_up=None):
        """give_up(): None, or why not to call this host now (it went silent): checked before a call
        and about once a second while waiting, so a worker never sits in a dead host's call."""
        self.connection = connection
        self.state_dir = state_dir
        self.transport = transport_for(connection)
        self.give_up = give_up

    def _is_shipped(self) -> bool:
        with _shipped_lock:
            return (self.connection, self._program_path()) in _shipped

    def _mark_shipped(self, shipped: bool) -> None:
        with _shipped_lock:
            if shipped:
                _shipped.add((self.connection, self._program_path()))
            else:
                _shipped.discard((self.connection, self._program_path()))

    def _program_path(self) -> str:
        # The local transport gets the same artifact in the same place: what runs is what ships.
        _, checksum = hostside_program()
        return f"{self.state_dir}/bin/uncloud_hostside-{checksum[:16]}.pyz"

    def _python(self) -> list[str]:
        if self.connection.transport == "local":
            return [sys.executable, "-I", "-S"]
        # An absolute interpreter skips PATH shims (pyenv's costs ~120 ms a call); -I -S skip the
        # user site and .pth files: the program needs only the standard library.
        return [REMOTE_PYTHON, "-I", "-S"]

    def ship(self) -> None:
        """Put the host-side program on the host unless the right version (by checksum) is there."""
        data, checksum = hostside_program()
        path = self._program_path()
        check = self.transport.run(["sha256sum", path], timeout=30, give_up=self.give_up)
        if check.exit_status != 0 or check.stdout.split()[:1] != [checksum]:
            self.transport.run(["mkdir", "-p", f"{self.state_dir}/bin"], timeout=30)
            self.transport.put_file(path, data)
            check = self.transport.run(["sha256sum", path], timeout=30)
            if check.stdout.split()[:1] != [checksum]:
                raise HostError("ship_failed", f"host-side program on {self.connection.name} failed its checksum")
        self._mark_shipped(True)

    def _take_stream(self) -> LineStream:
        key = (self.connection, self._program_path())
        with _streams_lock:
            idle = _idle_streams.get(key)
            if idle:
                return idle.pop()
        return self.transport.open_stream([*self._python(), self._program_path(), "serve"], give_up=self.give_up)

    def _drop_idle_streams(self) -> None:
        with _streams_lock:
            idle = _idle_streams.pop((self.connection, self._program_path()), [])
        for stream in idle:
            stream.close()

    def _give_back(self, stream: LineStream) -> None:
        with _streams_lock:
            _idle_streams.setdefault((self.connection, self._program_path()), []).append(stream)

    def warm(self, timeout: float = 30) -> None:
        """Do now what this process's first call to the host would: connect, check (or ship) the
        program and start one `serve` process, left idle for the next call. An empty batch is the
        request: it changes nothing on the host and answers once the program runs."""
        with _streams_lock:
            if _idle_streams.get((self.connection, self._program_path())):
                return
        self.call_batch([], timeout=timeout)

    def call(self, verb: str, spec: dict | None = None, timeout: float | None = None) -> dict:
        """Run one verb through a long-lived `serve` process of the host-side program.

        A stream that ends before answering (a dropped connection, a program removed behind our
        back) is replaced once and the request sent again: every verb is idempotent, so a verb
        that did run before the drop runs again to the same result.
        """
        if self.give_up is not None:
            reason = self.give_up()
            if reason:
                raise TransportError(f"{self.connection.name}: not calling {verb}: {reason}")
        if not self._is_shipped():
            self.ship()
        spec = {"state_dir": self.state_dir, **(spec or {})}
        holder = _holder.get()
        request = (json.dumps({"verb": verb, "spec": spec, **({"holder": holder} if holder else {})}) + "\n").encode()
        timeout = timeout or self.connection.command_timeout
        for attempt in (1, 2):
            stream = self._take_stream()
            try:
                line = stream.request(request, timeout, self.give_up)
            except StreamClosed as closed:
                stream.close()
                self._drop_idle_streams()  # they share the connection that just failed
                self._mark_shipped(False)
                if "can't open file" in closed.stderr or "No such file" in closed.stderr:
                    self.ship()
                if attempt == 2:
                    raise TransportError(
                        f"host-side program on {self.connection.name} ended without answering {verb}: "
                        f"{closed} {closed.stderr.strip()[-500:]}"
                    ) from None
                continue
            except BaseException:
                stream.close()  # a timed-out verb may still be running: this stream is not reusable
                raise
            try:
                answer = json.loads(line)
            except ValueError:
                answer = None
            if not isinstance(answer, dict):
                # Changed behind our back: verify (and ship again) on the next call.
                stream.close()
                self._mark_shipped(False)
            else:
                self._give_back(stream)
            return self._result(verb, answer, line)
        raise AssertionError("unreachable")

    def start_console_pipe(self) -> LineStream:
        """The host program's console-pipe, started and waiting for its spec line. Starting one
        costs an SSH exec and a Python start (about half a second in the lab), so the console
        gateway keeps one ready per host instead of making a click wait for it."""
        if not self._is_shipped():
            self.ship()
        return self.transport.open_stream([*self._python(), self._program_path(), "console-pipe"])

    def open_console(self, vm_uuid: str, kind: str, vnc_password: str | None = None,
                     password_valid_s: int = 30, timeout: float = 15, stream: LineStream | None = None) -> LineStream:
        """A byte pipe to a VM's VNC or serial socket (the host program's console-pipe) on a
        channel of the pooled connection; send_bytes/receive_bytes on it, close() ends it.
        stream: a pipe from start_console_pipe to use (else one is started now)."""
        if self.give_up is not None:
            reason = self.give_up()
            if reason:
                if stream is not None:
                    stream.close()
                raise TransportError(f"{self.connection.name}: no console: {reason}")
        spec = {"state_dir": self.state_dir, "uuid": vm_uuid, "kind": kind,
                "password_valid_s": password_valid_s}
        if vnc_password is not None:
            spec["vnc_password"] = vnc_password
        stream = stream or self.start_console_pipe()
        try:
            line = stream.request((json.dumps(spec) + "\n").encode(), timeout)
            try:
                answer = json.loads(line)
            except ValueError:
                answer = None
            self._result("console-pipe", answer, line)
        except BaseException:
            stream.close()
            raise
        return stream

    def _result(self, verb: str, answer, line: bytes) -> dict:
        if not isinstance(answer, dict):
            raise HostError(
                "bad_answer", f"{verb} gave no JSON answer", stderr=line[-2000:].decode(errors="replace"),
                host=self.connection.name,
            )
        if answer.get("ok"):
            return answer.get("result", {})
        error = answer.get("error", {})
        extra = {key: value for key, value in error.items() if key not in ("code", "message", "stderr", "argv")}
        raise HostError(
            error.get("code", "unknown"), error.get("message", f"{verb} failed"),
            stderr=error.get("stderr", ""), argv=error.get("argv"), host=self.connection.name, extra=extra,
        )

    def call_batch(self, calls: list[tuple[str, dict]], timeout: float | None = None) -> list[dict]:
        """Run several verbs in one round trip (the host-side `batch` verb), in order, stopping at
        the first failure, which raises its HostError (`.verb` names it, `.extra["batch_results"]`
        holds the answers before it). Returns each verb's result."""
        answer = self.call("batch", {"calls": [{"verb": verb, "spec": spec} for verb, spec in calls]}, timeout)
        return answer["results"]
