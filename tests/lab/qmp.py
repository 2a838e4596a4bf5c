"""One QMP client for the tests: a command to a qemu's QMP unix socket, as an operator checks a
guest. (Lab hosts share the filesystem, so a socket under any host's state dir is reachable from
the test process; no shell, no socat.)"""

import json
import socket


def qmp(socket_path, command, arguments=None, *, timeout=30, check=True):
    """The command's `return` (or, with check=False, the whole reply: `return` or `error`)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        connection.connect(str(socket_path))
        reader = connection.makefile("rb")
        reader.readline()  # the greeting
        for request in ({"execute": "qmp_capabilities"},
                        {"execute": command, **({"arguments": arguments} if arguments else {})}):
            connection.sendall(json.dumps(request).encode() + b"\n")
            while True:
                reply = json.loads(reader.readline())
                if "return" in reply or "error" in reply:  # anything else is an event
                    break
    if not check:
        return reply
    assert "return" in reply, reply
    return reply["return"]


def devices_on_ports(socket_path, prefix="diskport"):
    """{root port id: qdev ids of the devices plugged into it} for the guest's ports named prefix*."""
    found = {}
    for bus in qmp(socket_path, "query-pci"):
        for device in bus["devices"]:
            if device.get("qdev_id", "").startswith(prefix):
                found[device["qdev_id"]] = [child["qdev_id"] for child in
                                            (device.get("pci_bridge") or {}).get("devices", [])]
    return found
