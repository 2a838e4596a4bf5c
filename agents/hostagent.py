"""Calls the host-side program (agents/hostside/) on a hypervisor and turns its answers into errors
the Operation engine understands. No Django here either.
"""

import hashlib
import json
import sys
import threading
from functools import lru_cache
from pathlib import Path

from agents.transport import HostConnection, TransportError, transport_for

HOSTSIDE_SOURCE = Path(__file__).resolve().parent / "hostside" / "uncloud_hostside.py"

REMOTE_PYTHON = "/usr/bin/python3"

# Codes the host-side program answers with that are worth retrying.
TRANSIENT_CODES = {"timeout", "busy"}


class HostError(Exception):
    """The host-side program ran and reported a failure (structured, with the host's stderr)."""

    def __init__(self, code: str, message: str, *, stderr: str = "", argv=None, host: str = ""):
        super().__init__(f"{host}: {message}" if host else message)
        self.code = code
        self.stderr = stderr
        self.argv = argv or []
        self.transient = code in TRANSIENT_CODES

    def details(self) -> str:
        lines = []
        if self.argv:
            lines.append("command: " + " ".join(self.argv))
        if self.stderr:
            lines.append("stderr: " + self.stderr.strip()[-2000:])
        return "\n".join(lines)


# (connection, program path) pairs known to hold the right program in this process. Agents are
# made per workflow step; without this, every step would pay an extra sha256sum round trip.
_shipped: set[tuple[HostConnection, str]] = set()
_shipped_lock = threading.Lock()


@lru_cache(maxsize=1)
def hostside_program() -> tuple[bytes, str]:
    data = HOSTSIDE_SOURCE.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


class HostAgent:
    def __init__(self, connection: HostConnection, state_dir: str):
        self.connection = connection
        self.state_dir = state_dir
        self.transport = transport_for(connection)

    def _is_shipped(self) -> bool:
        with _shipped_lock:
            return self.connection.transport == "local" or (self.connection, self._program_path()) in _shipped

    def _mark_shipped(self, shipped: bool) -> None:
        with _shipped_lock:
            if shipped:
                _shipped.add((self.connection, self._program_path()))
            else:
                _shipped.discard((self.connection, self._program_path()))

    def _program_path(self) -> str:
        if self.connection.transport == "local":
            return str(HOSTSIDE_SOURCE)
        _, checksum = hostside_program()
        return f"{self.state_dir}/bin/uncloud_hostside-{checksum[:16]}.py"

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
        check = self.transport.run(["sha256sum", path], timeout=30)
        if check.exit_status != 0 or check.stdout.split()[:1] != [checksum]:
            self.transport.run(["mkdir", "-p", f"{self.state_dir}/bin"], timeout=30)
            self.transport.put_file(path, data)
            check = self.transport.run(["sha256sum", path], timeout=30)
            if check.stdout.split()[:1] != [checksum]:
                raise HostError("ship_failed", f"host-side program on {self.connection.name} failed its checksum")
        self._mark_shipped(True)

    def call(self, verb: str, spec: dict | None = None, timeout: float | None = None) -> dict:
        if not self._is_shipped():
            self.ship()
        spec = {"state_dir": self.state_dir, **(spec or {})}
        argv = [*self._python(), self._program_path(), verb]
        result = self.transport.run(argv, input=json.dumps(spec), timeout=timeout)
        try:
            answer = json.loads(result.stdout)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            # Removed or changed behind our back: verify (and ship again) on the next call.
            self._mark_shipped(False)
            if result.exit_status in (126, 127) or "can't open file" in result.stderr:
                raise TransportError(f"host-side program missing on {self.connection.name}: {result.stderr.strip()}")
            raise HostError(
                "bad_answer", f"{verb} gave no JSON answer (exit {result.exit_status})",
                stderr=result.stderr, argv=argv, host=self.connection.name,
            )
        if answer.get("ok"):
            return answer.get("result", {})
        error = answer.get("error", {})
        raise HostError(
            error.get("code", "unknown"), error.get("message", f"{verb} failed"),
            stderr=error.get("stderr", ""), argv=error.get("argv"), host=self.connection.name,
        )
