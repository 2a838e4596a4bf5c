"""How the control plane reaches a hypervisor: SSH (paramiko) or, for the embedded default, locally.

Commands are argument lists. Over SSH they are joined with shlex.join, so the remote shell sees
each argument as one quoted word: nothing a customer typed can become shell syntax.
This module needs no Django: benchmarks and the lab use it directly.
"""

import base64
import os
import selectors
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko


class TransportError(Exception):
    """The host could not be reached or did not answer in time. Usually worth a retry."""

    transient = True


class HostKeyMismatch(TransportError):
    """The host presented a key other than the pinned one: possibly an attack, never retried."""

    transient = False


class TransferFailed(TransportError):
    """A file to copy is not there: trying again will not make it appear."""

    transient = False


@dataclass(frozen=True)
class HostConnection:
    """Everything needed to reach one host; built from agents.models.Host or by the lab."""

    name: str
    transport: str = "ssh"  # "ssh" or "local"
    address: str = ""
    port: int = 22
    user: str = "root"
    host_key: str = ""  # "ssh-ed25519 AAAA..."
    key_file: str = ""
    connect_timeout: float = 10
    command_timeout: float = 120


@dataclass
class CommandResult:
    argv: list[str]
    exit_status: int
    stdout: str
    stderr: str


class StreamClosed(TransportError):
    """A long-lived remote process ended (or its channel dropped) before it answered."""

    def __init__(self, message: str, stderr: str = ""):
        super().__init__(message)
        self.stderr = stderr


class LineStream:
    """A long-lived remote process spoken to in lines: write a request line, read one answer line.

    Subclasses provide _send, _receive (bytes, b"" at end of stream, None on a read timeout),
    _stderr and close.
    """

    name = ""

    def __init__(self):
        self._buffer = bytearray()

    def request(self, line: bytes, timeout: float, give_up=None) -> bytes:
        """give_up(): a reason to stop waiting (the host went silent), checked about once a second."""
        try:
            self._send(line)
        except (OSError, EOFError, paramiko.SSHException) as error:
            raise StreamClosed(f"{self.name}: cannot send: {error}", self._stderr()) from None
        deadline = time.monotonic() + timeout
        next_check = time.monotonic() + 1.0
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportError(f"{self.name}: no answer within {timeout:.0f} s")
            if give_up is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + 1.0
                reason = give_up()
                if reason:
                    raise TransportError(f"{self.name}: gave up waiting: {reason}")
            try:
                chunk = self._receive(min(remaining, 1.0))
            except (OSError, EOFError, paramiko.SSHException) as error:
                raise StreamClosed(f"{self.name}: {error}", self._stderr()) from None
            if chunk == b"":
                raise StreamClosed(f"{self.name}: the remote program ended", self._stderr())
            if chunk:
                self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return line

    # After a request, a program that turns into a byte pipe (the console) is spoken to in bytes.
    def send_bytes(self, data: bytes) -> None:
        try:
            self._send(data)
        except (OSError, EOFError, paramiko.SSHException) as error:
            raise StreamClosed(f"{self.name}: cannot send: {error}", self._stderr()) from None

    def receive_bytes(self, timeout: float) -> bytes | None:
        """Bytes that arrived (what came after the answer line first), b"" at the end, None when
        nothing came within timeout."""
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            return data
        try:
            return self._receive(timeout)
        except (OSError, EOFError, paramiko.SSHException):
            return b""


class LocalLineStream(LineStream):
    def __init__(self, argv: list[str], name: str):
        super().__init__()
        self.name = name
        # stderr goes to a file: a pipe nobody reads could fill up and block the program.
        self._stderr_file = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr_file, bufsize=0
        )
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._process.stdout, selectors.EVENT_READ)

    def _send(self, data: bytes) -> None:
        self._process.stdin.write(data)

    def _receive(self, timeout: float) -> bytes | None:
        if not self._selector.select(timeout):
            return None
        return os.read(self._process.stdout.fileno(), 65536)

    def _stderr(self) -> str:
        self._stderr_file.seek(0)
        return self._stderr_file.read()[-4000:].decode(errors="replace")

    def close(self) -> None:
        for pipe in (self._process.stdin, self._process.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        self._selector.close()
        self._stderr_file.close()
        # Closing stdin ends the program after its current verb; nobody waits for it here.
        threading.Thread(target=self._process.wait, daemon=True).start()


class SSHLineStream(LineStream):
    def __init__(self, channel: paramiko.Channel, name: str):
        super().__init__()
        self.name = name
        self._channel = channel

    def _send(self, data: bytes) -> None:
        self._channel.sendall(data)

    def _receive(self, timeout: float) -> bytes | None:
        self._channel.settimeout(timeout)
        try:
            return self._channel.recv(65536)
        except TimeoutError:
            return None

    def _stderr(self) -> str:
        stderr = bytearray()
        while self._channel.recv_stderr_ready():
            stderr += self._channel.recv_stderr(65536)
        return stderr[-4000:].decode(errors="replace")

    def close(self) -> None:
        self._channel.close()


def _copy_locally(source: str, target: str, host_name: str) -> None:
    try:
        shutil.copyfile(source, target)
    except FileNotFoundError as error:
        raise TransferFailed(f"cannot copy {source} to {target} on {host_name}: {error}") from None
    except OSError as error:
        raise TransportError(f"cannot copy {source} to {target} on {host_name}: {error}") from None


class LocalTransport:
    def __init__(self, connection: HostConnection):
        self.connection = connection

    def run(self, argv: list[str], input: str | None = None, timeout: float | None = None,
            give_up=None) -> CommandResult:
        timeout = timeout or self.connection.command_timeout
        try:
            completed = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as error:
            raise TransportError(f"{argv[0]} did not finish within {timeout:.0f} s on {self.connection.name}") from error
        except FileNotFoundError as error:
            return CommandResult(argv, 127, "", str(error))
        return CommandResult(argv, completed.returncode, completed.stdout, completed.stderr)

    def open_stream(self, argv: list[str], give_up=None) -> LineStream:
        try:
            return LocalLineStream(argv, self.connection.name)
        except OSError as error:
            raise StreamClosed(f"cannot start {argv[0]} on {self.connection.name}: {error}") from None

    def put_file(self, path: str, data: bytes, mode: int = 0o755) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(target.name + ".tmp")
        temporary.write_bytes(data)
        temporary.chmod(mode)
        temporary.replace(target)

    def put_path(self, local_path: str, remote_path: str) -> None:
        """Copy a file to the host (here: this machine), streamed, never held in memory."""
        _copy_locally(local_path, remote_path, self.connection.name)

    def get_path(self, remote_path: str, local_path: str) -> None:
        _copy_locally(remote_path, local_path, self.connection.name)

    def close(self) -> None:
        pass


def parse_public_key(line: str) -> paramiko.PKey:
    parts = line.strip().split()
    if len(parts) < 2:
        raise ValueError("a host key looks like 'ssh-ed25519 AAAA...'")
    try:
        return paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))
    except Exception as error:
        raise ValueError(f"not a usable public key: {error}") from None


def _known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


class SSHTransport:
    def __init__(self, connection: HostConnection):
        self.connection = connection
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    def _open_socket(self, give_up) -> socket.socket:
        """TCP to the host in tries of a second each, asking give_up() between them: a host that drops
        our SYNs (black-holed, powered off) holds a worker only until the heartbeat watcher calls it
        silent, not for the whole connect timeout."""
        connection = self.connection
        deadline = time.monotonic() + connection.connect_timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                return socket.create_connection((connection.address, connection.port), timeout=max(0.1, min(1.0, remaining)))
            except TimeoutError as error:
                reason = give_up()
                if reason:
                    raise TransportError(f"cannot reach {connection.name}: gave up connecting: {reason}") from None
                if time.monotonic() >= deadline:
                    raise TransportError(f"cannot reach {connection.name} ({connection.address}): {error}") from None
            except OSError as error:
                raise TransportError(f"cannot reach {connection.name} ({connection.address}): {error}") from None

    def _connect(self, give_up=None) -> paramiko.SSHClient:
        connection = self.connection
        if not connection.host_key:
            raise HostKeyMismatch(f"{connection.name} has no pinned host key; fetch and confirm it first.")
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        pinned = parse_public_key(connection.host_key)
        client.get_host_keys().add(_known_hosts_name(connection.address, connection.port), pinned.get_name(), pinned)
        sock = self._open_socket(give_up) if give_up is not None else None
        try:
            client.connect(
                connection.address,
                sock=sock,
                port=connection.port,
                username=connection.user,
                key_filename=connection.key_file or None,
                timeout=connection.connect_timeout,
                banner_timeout=connection.connect_timeout,
                auth_timeout=connection.connect_timeout,
                allow_agent=False,
                look_for_keys=not connection.key_file,
            )
        except paramiko.BadHostKeyException as error:
            client.close()
            raise HostKeyMismatch(
                f"{connection.name} presented host key {error.key.get_base64()[:24]}…, not the pinned one: "
                "refusing to connect. If the host was reinstalled, update its pinned key."
            ) from None
        except paramiko.SSHException as error:
            client.close()
            if "not found in known_hosts" in str(error):
                raise HostKeyMismatch(
                    f"{connection.name} offered a host key of another type than the pinned one; refusing."
                ) from None
            raise TransportError(f"SSH to {connection.name} failed: {error}") from None
        except OSError as error:
            client.close()
            raise TransportError(f"cannot reach {connection.name} ({connection.address}): {error}") from None
        transport = client.get_transport()
        transport.set_keepalive(30)
        return client

    def _client_or_connect(self, give_up=None) -> paramiko.SSHClient:
        with self._lock:
            if self._client is None or not self._client.get_transport() or not self._client.get_transport().is_active():
                self._client = self._connect(give_up)
            return self._client

    def _on_pooled_connection(self, action, what: str, give_up=None):
        """action(client) on the pooled connection. A pooled connection can die between commands:
        reconnect once, then give up."""
        for attempt in (1, 2):
            client = self._client_or_connect(give_up)
            try:
                return action(client)
            except (paramiko.SSHException, EOFError, ConnectionError) as error:
                self.close()
                if attempt == 2:
                    raise TransportError(f"{what} on {self.connection.name} failed: {error}") from None
        raise AssertionError("unreachable")

    def run(self, argv: list[str], input: str | None = None, timeout: float | None = None,
            give_up=None) -> CommandResult:
        """give_up(): None, or why to stop connecting to the host (see _open_socket)."""
        timeout = timeout or self.connection.command_timeout
        command = shlex.join(argv)
        return self._on_pooled_connection(
            lambda client: self._run_once(client, argv, command, input, timeout), "SSH command", give_up
        )

    def _run_once(self, client, argv, command, input, timeout) -> CommandResult:
        channel = client.get_transport().open_session(timeout=self.connection.connect_timeout)
        try:
            channel.settimeout(1.0)
            channel.exec_command(command)
            if input is not None:
                channel.sendall(input.encode())
            channel.shutdown_write()
            deadline = time.monotonic() + timeout
            stdout, stderr = bytearray(), bytearray()
            while True:
                while channel.recv_ready():
                    stdout += channel.recv(65536)
                while channel.recv_stderr_ready():
                    stderr += channel.recv_stderr(65536)
                # sshd sends the exit status when the command exits, which can be before the last of
                # its output (or a child's still holding stdout) has crossed: only EOF ends the output.
                if (channel.exit_status_ready() and (channel.eof_received or channel.closed)
                        and not channel.recv_ready() and not channel.recv_stderr_ready()):
                    break
                if time.monotonic() > deadline:
                    raise TransportError(
                        f"{argv[0]} did not finish within {timeout:.0f} s on {self.connection.name}"
                    )
                channel.status_event.wait(0.005)
            return CommandResult(
                argv, channel.recv_exit_status(), stdout.decode(errors="replace"), stderr.decode(errors="replace")
            )
        finally:
            channel.close()

    def open_stream(self, argv: list[str], give_up=None) -> LineStream:
        """Start a long-lived program over the pooled connection, spoken to in lines."""

        def start(client):
            channel = client.get_transport().open_session(timeout=self.connection.connect_timeout)
            channel.exec_command(shlex.join(argv))
            return SSHLineStream(channel, self.connection.name)

        return self._on_pooled_connection(start, "SSH", give_up)

    def put_file(self, path: str, data: bytes, mode: int = 0o755) -> None:
        client = self._client_or_connect()
        temporary = path + ".tmp"
        try:
            with client.open_sftp() as sftp:
                with sftp.open(temporary, "wb") as remote:
                    remote.write(data)
                sftp.chmod(temporary, mode)
                sftp.posix_rename(temporary, path)
        except (OSError, paramiko.SSHException) as error:
            raise TransportError(f"cannot upload {path} to {self.connection.name}: {error}") from None

    def put_path(self, local_path: str, remote_path: str) -> None:
        """Stream a file to the host over SFTP on the pooled connection (files can be gigabytes)."""
        self._transfer(lambda sftp: sftp.put(local_path, remote_path, confirm=True), local_path, remote_path)

    def get_path(self, remote_path: str, local_path: str) -> None:
        """Stream a file from the host over SFTP on the pooled connection."""
        self._transfer(lambda sftp: sftp.get(remote_path, local_path), remote_path, local_path)

    def _transfer(self, action, source: str, target: str) -> None:
        def run(client):
            with client.open_sftp() as sftp:
                action(sftp)

        try:
            self._on_pooled_connection(run, f"copying {source} to {target}")
        except FileNotFoundError as error:
            raise TransferFailed(f"cannot copy {source} to {target} on {self.connection.name}: {error}") from None
        except (OSError, paramiko.SSHException) as error:
            raise TransportError(f"cannot copy {source} to {target} on {self.connection.name}: {error}") from None

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


_pool: dict[HostConnection, "LocalTransport | SSHTransport"] = {}
_pool_lock = threading.Lock()


def transport_for(connection: HostConnection):
    """A pooled transport: one open SSH connection per host and process, reused across commands."""
    with _pool_lock:
        transport = _pool.get(connection)
        if transport is None:
            transport = LocalTransport(connection) if connection.transport == "local" else SSHTransport(connection)
            _pool[connection] = transport
        return transport


def close_all() -> None:
    with _pool_lock:
        for transport in _pool.values():
            transport.close()
        _pool.clear()


def fetch_host_key(address: str, port: int = 22, timeout: float = 10) -> str:
    """Ask a host for its public key (to show staff before pinning it at registration)."""
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as error:
        raise TransportError(f"cannot reach {address}:{port}: {error}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"
    except paramiko.SSHException as error:
        raise TransportError(f"no SSH host key from {address}:{port}: {error}") from None
    finally:
        transport.close()
