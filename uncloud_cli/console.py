"""`uncloud vms console --serial`: this terminal on a VM's serial line, through the console gateway.

A small WebSocket client (RFC 6455) of the standard library: the CLI keeps its three dependencies.
The terminal is put in raw mode while attached; Ctrl-] leaves, like telnet.
"""

import base64
import hashlib
import os
import select
import socket
import ssl
import struct
import sys
from urllib.parse import urlsplit

from uncloud_cli.errors import EXIT_API, EXIT_CONNECTION, CLIError

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ESCAPE = b"\x1d"  # Ctrl-]
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class WebSocket:
    def __init__(self, sock):
        self.sock = sock
        self.pending = b""

    @classmethod
    def connect(cls, url: str, origin: str, timeout: float = 30) -> "WebSocket":
        parts = urlsplit(url)
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        try:
            sock = socket.create_connection((parts.hostname, port), timeout=timeout)
            if secure:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        except OSError as error:
            raise CLIError(f"Cannot reach the console gateway at {parts.netloc}: {error}", EXIT_CONNECTION) from None
        key = base64.b64encode(os.urandom(16)).decode()
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        sock.sendall((f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                      f"Origin: {origin}\r\nUser-Agent: uncloud-cli\r\n\r\n").encode())
        websocket = cls(sock)
        head = websocket._read_until(b"\r\n\r\n")
        status_line, *header_lines = head.decode(errors="replace").split("\r\n")
        status = status_line.split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            body = websocket._drain()
            sock.close()
            raise CLIError(f"The console gateway refused: {' '.join(status[1:])}: "
                           f"{body.decode(errors='replace').strip()}", EXIT_API)
        headers = {name.strip().lower(): value.strip() for name, _, value in
                   (line.partition(":") for line in header_lines if line)}
        expected = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != expected:
            sock.close()
            raise CLIError("The console gateway answered a wrong WebSocket handshake.", EXIT_CONNECTION)
        sock.settimeout(None)
        return websocket

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise CLIError("The console gateway closed the connection.", EXIT_CONNECTION)
            self.pending += chunk
        head, self.pending = self.pending.split(marker, 1)
        return head

    def _drain(self) -> bytes:
        self.sock.settimeout(2)
        try:
            while chunk := self.sock.recv(65536):
                self.pending += chunk
        except OSError:
            pass
        return self.pending

    def send(self, data: bytes, opcode: int = OP_BINARY) -> None:
        """One masked frame (clients must mask)."""
        length = len(data)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(data))
        self.sock.sendall(header + mask + masked)

    def _frame(self):
        """(opcode, payload) of the next whole frame in the buffer, or None."""
        if len(self.pending) < 2:
            return None
        first, second = self.pending[0], self.pending[1]
        length, offset = second & 0x7F, 2
        if length == 126:
            if len(self.pending) < 4:
                return None
            length, offset = struct.unpack("!H", self.pending[2:4])[0], 4
        elif length == 127:
            if len(self.pending) < 10:
                return None
            length, offset = struct.unpack("!Q", self.pending[2:10])[0], 10
        mask = b""
        if second & 0x80:
            mask, offset = self.pending[offset:offset + 4], offset + 4
        if len(self.pending) < offset + length:
            return None
        payload = self.pending[offset:offset + length]
        self.pending = self.pending[offset + length:]
        if mask:
            payload = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        return first & 0x0F, payload

    def receive(self):
        """Data that arrived (bytes), or ("closed", code, reason) once the gateway closed."""
        chunk = self.sock.recv(65536)
        if not chunk:
            return ("closed", 1006, "connection lost")
        self.pending += chunk
        return self.buffered()

    def buffered(self):
        """What whole frames in the buffer carry (the handshake's read may have taken some)."""
        data = b""
        while (frame := self._frame()) is not None:
            opcode, payload = frame
            if opcode in (OP_BINARY, OP_TEXT, OP_CONTINUATION):
                data += payload
            elif opcode == OP_PING:
                self.send(payload, OP_PONG)
            elif opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.close(code)
                return ("closed", code, payload[2:].decode(errors="replace"))
        return data

    def close(self, code: int = 1000) -> None:
        try:
            self.send(struct.pack("!H", code), OP_CLOSE)
        except OSError:
            pass
        self.sock.close()


def attach(url: str, origin: str, stdin=None, stdout=None) -> str:
    """Copy stdin to the serial line and the line to stdout until Ctrl-] or the gateway closes;
    returns why it ended."""
    stdin_fd = (stdin or sys.stdin).fileno()
    stdout_fd = (stdout or sys.stdout).fileno()
    websocket = WebSocket.connect(url, origin)
    saved = None
    if os.isatty(stdin_fd):
        import termios
        import tty

        saved = termios.tcgetattr(stdin_fd)
        tty.setraw(stdin_fd)
        os.write(stdout_fd, b"Connected to the serial console; Ctrl-] leaves.\r\n")
    try:
        early = websocket.buffered()
        if isinstance(early, tuple):
            return early[2] or f"closed ({early[1]})"
        os.write(stdout_fd, early)
        while True:
            # TLS may hold decrypted bytes that select() cannot see.
            tls_pending = isinstance(websocket.sock, ssl.SSLSocket) and websocket.sock.pending()
            readable = [websocket.sock] if tls_pending else select.select([stdin_fd, websocket.sock], [], [])[0]
            if stdin_fd in readable:
                data = os.read(stdin_fd, 4096)
                if not data or ESCAPE in data:
                    before = data.split(ESCAPE, 1)[0]
                    if before:
                        websocket.send(before)
                    websocket.close()
                    return "left"
                websocket.send(data)
            if websocket.sock in readable:
                received = websocket.receive()
                if isinstance(received, tuple):
                    return received[2] or f"closed ({received[1]})"
                os.write(stdout_fd, received)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
