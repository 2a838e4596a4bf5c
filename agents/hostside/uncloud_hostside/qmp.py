"""QMP: qemu's JSON control protocol on the VM's unix socket."""

import json
import os
import select
import socket
import time

from .errors import HostsideError


class QmpStdio:
    """QMP over a qemu's stdin/stdout (-qmp stdio), reading whole lines straight from the pipe:
    a buffered file object would hide lines already read from select()."""

    def __init__(self, process, deadline):
        self.process, self.deadline, self.pending = process, deadline, b""

    def command(self, name):
        self.process.stdin.write((json.dumps({"execute": name}) + "\n").encode())
        self.process.stdin.flush()
        return self.answer()

    def answer(self):
        """The next greeting, return or error (events are skipped)."""
        while True:
            line = self.line()
            message = json.loads(line)
            if "return" in message or "error" in message or "QMP" in message:
                return message

    def line(self):
        descriptor = self.process.stdout.fileno()
        while b"\n" not in self.pending:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0 or not select.select([descriptor], [], [], remaining)[0]:
                raise TimeoutError
            chunk = os.read(descriptor, 65536)
            if not chunk:
                raise EOFError
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line


def qmp_read_reply(reader):
    while True:
        line = reader.readline()
        if not line:
            raise HostsideError("qmp_failed", "QMP connection closed")
        message = json.loads(line)
        if "return" in message or "error" in message:
            return message


def qmp_run(socket_path, commands, timeout_s=5):
    """Run [(command, arguments or None), ...] on one QMP connection; the last command's return."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout_s)
        try:
            connection.connect(socket_path)
            reader = connection.makefile("rb")
            greeting = json.loads(reader.readline() or b"{}")
            if "QMP" not in greeting:
                raise HostsideError("qmp_failed", "no QMP greeting")
            reply = None
            for command, arguments in [("qmp_capabilities", None), *commands]:
                request = {"execute": command, **({"arguments": arguments} if arguments else {})}
                connection.sendall(json.dumps(request).encode() + b"\n")
                reply = qmp_read_reply(reader)
                if "error" in reply:
                    raise HostsideError("qmp_failed", f"QMP {command}: "
                                        f"{reply['error'].get('desc', reply['error'])}")
            return reply["return"]
        except (OSError, ValueError) as error:
            names = ", ".join(command for command, _ in commands)
            raise HostsideError("qmp_failed", f"QMP {names} on {socket_path}: {error}") from None


def qmp_unplug_device(socket_path, device_id, timeout_s):
    """`device_del` and wait until the guest has let go (the DEVICE_DELETED event).

    PCIe hot-unplug needs the guest's consent: Linux answers after pciehp's 5 s attention-button
    delay; a guest that never answers keeps the device and this raises `timeout`. Returns
    "removed", or "absent" when no such device is plugged in (a repeated call)."""
    deadline = time.monotonic() + timeout_s
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout_s)
        try:
            connection.connect(socket_path)
            reader = connection.makefile("rb")
            if "QMP" not in json.loads(reader.readline() or b"{}"):
                raise HostsideError("qmp_failed", "no QMP greeting")
            connection.sendall(b'{"execute": "qmp_capabilities"}\n')
            qmp_read_reply(reader)
            request = {"execute": "device_del", "arguments": {"id": device_id}}
            connection.sendall(json.dumps(request).encode() + b"\n")
            while True:
                connection.settimeout(max(0.01, deadline - time.monotonic()))
                line = reader.readline()
                if not line:
                    raise HostsideError("qmp_failed", "QMP connection closed")
                message = json.loads(line)
                if message.get("event") == "DEVICE_DELETED" and \
                        message.get("data", {}).get("device") == device_id:
                    return "removed"
                if "error" in message:
                    description = message["error"].get("desc", "")
                    if "not found" in description:
                        return "absent"
                    if "in the process of unplug" not in description:
                        raise HostsideError("qmp_failed", f"QMP device_del {device_id}: {description}")
        except TimeoutError:
            raise HostsideError("timeout", f"the guest did not release {device_id} within "
                                f"{timeout_s:g} s (it must answer PCIe hot-unplug)") from None
        except (OSError, ValueError) as error:
            raise HostsideError("qmp_failed", f"QMP device_del {device_id} on {socket_path}: "
                                f"{error}") from None


def qmp_execute(socket_path, command, arguments=None, timeout_s=5):
    return qmp_run(socket_path, [(command, arguments)], timeout_s)


def qmp_status(socket_path):
    try:
        return qmp_execute(socket_path, "query-status")["status"], None
    except HostsideError as error:
        return "unresponsive", error.message
