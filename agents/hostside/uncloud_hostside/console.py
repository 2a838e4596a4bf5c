"""The browser console's end on the host: pipe a VM's VNC or serial socket to stdin/stdout.

    python3 uncloud_hostside.pyz console-pipe
    stdin:  {"state_dir": ..., "uuid": ..., "kind": "vnc"|"serial", "vnc_password": ..., "password_valid_s": N}\\n
            then the client's bytes
    stdout: one answer line ({"ok": true, ...} or {"ok": false, "error": ...}), then the socket's bytes

The console gateway runs this on an exec channel of the SSH connection it keeps per host (locally
as a subprocess), one per console session. A verb instead of an SSH streamlocal channel because
the host program checks what may be opened (only a known VM's own console sockets, never a path the
control plane names), sets the one-time VNC password in the same call, works alike over the local
transport, and sshd needs no AllowStreamLocalForwarding. It is not in the verb table: it owns
stdin/stdout for its whole life, so neither `serve` nor `batch` can run it.
"""

import json
import os
import select
import socket

from .checks import check_fields, check_int, check_state_dir, check_uuid
from .errors import HostsideError, bad_spec
from .paths import vm_paths
from .qmp import qmp_run

KINDS = ("vnc", "serial")
# VNC's DES authentication uses at most 8 characters of a password.
VNC_PASSWORD_LENGTH = 8
MAX_SPEC_LINE = 4096
CHUNK = 65536


def parse_console_spec(spec):
    check_fields(spec, ["state_dir", "uuid", "kind"], ["vnc_password", "password_valid_s"])
    if spec["kind"] not in KINDS:
        raise bad_spec("kind must be vnc or serial")
    console = {"state_dir": check_state_dir(spec["state_dir"]), "uuid": check_uuid(spec["uuid"]),
               "kind": spec["kind"], "vnc_password": None,
               "password_valid_s": check_int(spec.get("password_valid_s", 30), "password_valid_s", 1, 600)}
    if console["kind"] == "vnc":
        password = spec.get("vnc_password")
        if not isinstance(password, str) or len(password) != VNC_PASSWORD_LENGTH \
                or not password.isascii() or not password.isalnum():
            raise bad_spec(f"vnc_password must be {VNC_PASSWORD_LENGTH} ASCII letters or digits")
        console["vnc_password"] = password
    return console


def open_console_socket(console):
    """Connect to the VM's console socket; for VNC first set a password valid for a few seconds
    (qemu refuses VNC clients without one: -vnc ...,password=on). Connections already open stay."""
    paths = vm_paths(console["state_dir"], console["uuid"])
    socket_path = paths["vnc"] if console["kind"] == "vnc" else paths["tty"]
    if not os.path.exists(paths["pid"]) or not os.path.exists(socket_path):
        raise HostsideError("not_running", f"VM {console['uuid']} is not running here "
                            f"(no {os.path.basename(socket_path)})")
    if console["kind"] == "vnc":
        qmp_run(paths["qmp"], [
            ("set_password", {"protocol": "vnc", "password": console["vnc_password"]}),
            ("expire_password", {"protocol": "vnc", "time": f"+{console['password_valid_s']}"}),
        ])
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(socket_path)
    except OSError as error:
        connection.close()
        raise HostsideError("not_running", f"cannot open the {console['kind']} console of "
                            f"{console['uuid']}: {error}") from None
    return connection


def read_spec_line(stdin_fd):
    """The first line of stdin and whatever of the client's bytes came with it."""
    pending = b""
    while b"\n" not in pending:
        chunk = os.read(stdin_fd, CHUNK)
        if not chunk:
            raise bad_spec("stdin ended before the spec line")
        pending += chunk
        if len(pending) > MAX_SPEC_LINE and b"\n" not in pending[:MAX_SPEC_LINE]:
            raise bad_spec("the spec line is too long")
    line, rest = pending.split(b"\n", 1)
    try:
        spec = json.loads(line)
    except ValueError as error:
        raise bad_spec(f"the spec line is not JSON: {error}") from None
    if not isinstance(spec, dict):
        raise bad_spec("the spec line must be a JSON object")
    return spec, rest


def write_all(fd, data):
    while data:
        written = os.write(fd, data)
        data = data[written:]


def relay(stdin_fd, stdout_fd, connection, first_bytes):
    """Copy both ways until either side ends: the gateway closing the channel ends the pipe, and
    qemu going away (VM stopped) ends it too."""
    if first_bytes:
        connection.sendall(first_bytes)
    sock_fd = connection.fileno()
    while True:
        readable, _, _ = select.select([stdin_fd, sock_fd], [], [])
        if stdin_fd in readable:
            data = os.read(stdin_fd, CHUNK)
            if not data:
                return "client_closed"
            connection.sendall(data)
        if sock_fd in readable:
            data = connection.recv(CHUNK)
            if not data:
                return "console_closed"
            write_all(stdout_fd, data)


def console_pipe(stdin_fd=0, stdout_fd=1):
    def answer(message):
        write_all(stdout_fd, (json.dumps(message, sort_keys=True) + "\n").encode())

    try:
        spec, first_bytes = read_spec_line(stdin_fd)
        connection = open_console_socket(parse_console_spec(spec))
    except HostsideError as error:
        answer({"ok": False, "error": error.as_dict()})
        return 2 if error.code == "bad_spec" else 1
    with connection:
        answer({"ok": True, "result": {"kind": spec["kind"]}})
        try:
            relay(stdin_fd, stdout_fd, connection, first_bytes)
        except OSError:
            pass  # either end went away mid-write: the session is over either way
    return 0
