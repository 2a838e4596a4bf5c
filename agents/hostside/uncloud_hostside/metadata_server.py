"""metadata-serve: the metadata HTTP daemon on every network bridge's link-local address."""

import contextlib
import ipaddress
import json
import os
import signal
import socket
import sys
import time

from .checks import check_fields, check_int, check_state_dir
from .errors import HostsideError, bad_spec
from .metadata import METADATA_ADDRESS, bridges_of_networks, metadata_bridges_up
from .nft import load_port_states
from .paths import metadata_server_paths, vm_metadata_paths
from .state import read_json_file, write_json_file
from .system import ip_json, run_command

METADATA_RESCAN_S = 1.0
# A guest holds at most METADATA_CLIENTS_PER_SOURCE connections per address (it has two: EUI-64 and
# link-local; the guard drops any other source), each for at most METADATA_CONNECTION_TIMEOUT_S,
# so one guest's slow connections cannot use up the service's METADATA_MAX_CLIENTS for the others.
METADATA_MAX_CLIENTS = 512
METADATA_CLIENTS_PER_SOURCE = 4
METADATA_CONNECTION_TIMEOUT_S = 5.0
METADATA_THREAD_STACK_BYTES = 256 * 1024
OPENSTACK_VERSIONS = ("2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30",
                      "2016-10-06", "2017-02-22", "2018-08-27", "latest")
EC2_VERSIONS = ("1.0", "2007-01-19", "2009-04-04", "latest")


def metadata_for_source(state_dir, source, vni):
    """The metadata of the VM whose port on network vni owns source (its EUI-64 or link-local
    address). The nft guard drops any frame from a guest with another source address, so the
    source identifies the VM."""
    for port in load_port_states(state_dir):
        if port["vni"] == vni and source in (port["ipv6"], port["link_local"]):
            return read_json_file(vm_metadata_paths(state_dir, port["vm_uuid"])["record"])
    return None


def openstack_meta_data(metadata):
    keys = metadata["ssh_keys"]
    return {"uuid": metadata["uuid"], "name": metadata["name"], "hostname": metadata["hostname"],
            "launch_index": 0, "availability_zone": "uncloud", "project_id": metadata["project_id"],
            "public_keys": {key["name"]: key["public_key"] for key in keys},
            "keys": [{"name": key["name"], "type": "ssh", "data": key["public_key"]} for key in keys],
            "meta": {}}


def metadata_response(metadata, path):
    """(status, content type, body) for one GET; EC2 and OpenStack layouts, like cloud-init reads."""
    text, json_type = "text/plain; charset=utf-8", "application/json"
    path = path.split("?", 1)[0].rstrip("/") or "/"
    parts = [part for part in path.split("/") if part]
    if not parts:
        return 200, text, "latest\nopenstack\n"
    if parts[0] == "openstack":
        if len(parts) == 1:
            return 200, text, "\n".join(OPENSTACK_VERSIONS) + "\n"
        if parts[1] not in OPENSTACK_VERSIONS:
            return 404, text, "no such version\n"
        documents = {
            "meta_data.json": (json_type, json.dumps(openstack_meta_data(metadata))),
            "network_data.json": (json_type, json.dumps({"links": [], "networks": [], "services": []})),
            "vendor_data.json": (json_type, "{}"),
            "vendor_data2.json": (json_type, "{}"),
        }
        if metadata["user_data"]:
            documents["user_data"] = (text, metadata["user_data"])
        if len(parts) == 2:
            return 200, text, "\n".join(sorted(documents)) + "\n"
        if len(parts) == 3 and parts[2] in documents:
            return (200, *documents[parts[2]])
        return 404, text, "not found\n"
    if parts[0] in EC2_VERSIONS:
        rest = parts[1:]
        if not rest:
            return 200, text, "meta-data\n" + ("user-data\n" if metadata["user_data"] else "")
        if rest == ["user-data"]:
            return (200, text, metadata["user_data"]) if metadata["user_data"] else (404, text, "none\n")
        if rest[0] != "meta-data":
            return 404, text, "not found\n"
        keys = metadata["ssh_keys"]
        values = {"instance-id": metadata["uuid"], "hostname": metadata["hostname"],
                  "local-hostname": metadata["hostname"], "placement": "availability-zone\n"}
        rest = rest[1:]
        if not rest:
            return 200, text, "\n".join([*values, "public-keys/"]) + "\n"
        if rest[0] in values and len(rest) == 1:
            return 200, text, values[rest[0]]
        if rest == ["placement", "availability-zone"]:
            return 200, text, "uncloud"
        if rest[0] == "public-keys":
            if len(rest) == 1:
                return 200, text, "".join(f"{index}={key['name']}\n" for index, key in enumerate(keys))
            if rest[1].isdigit() and int(rest[1]) < len(keys):
                if len(rest) == 2:
                    return 200, text, "openssh-key\n"
                if rest[2:] == ["openssh-key"]:
                    return 200, text, keys[int(rest[1])]["public_key"] + "\n"
        return 404, text, "not found\n"
    return 404, text, "not found\n"


def serve_metadata_client(connection, state_dir, vni, source):
    """One request. The whole exchange, however slowly the guest sends, ends within
    METADATA_CONNECTION_TIMEOUT_S (a per-recv timeout alone lets a byte every few seconds hold
    the connection for ever)."""
    deadline = time.monotonic() + METADATA_CONNECTION_TIMEOUT_S

    def time_left():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not complete in time")
        return remaining

    with connection:
        try:
            request = b""
            while b"\r\n\r\n" not in request and b"\n\n" not in request and len(request) < 8192:
                connection.settimeout(time_left())
                chunk = connection.recv(4096)
                if not chunk:
                    break
                request += chunk
            request_line = request.split(b"\n", 1)[0].decode("latin-1").strip().split()
            if len(request_line) != 3 or request_line[0] not in ("GET", "HEAD"):
                status, content_type, body = 405, "text/plain", "only GET and HEAD\n"
            else:
                metadata = metadata_for_source(state_dir, str(ipaddress.IPv6Address(source)), vni)
                if metadata is None:
                    status, content_type, body = 403, "text/plain", \
                        f"{source} is no VM's address on this network: refused\n"
                else:
                    status, content_type, body = metadata_response(metadata, request_line[1])
            payload = body.encode()
            reason = {200: "OK", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed"}[status]
            head = (f"HTTP/1.0 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode()
            connection.settimeout(time_left())
            connection.sendall(head + (b"" if request_line[:1] == ["HEAD"] else payload))
        except (OSError, ValueError) as error:
            sys.stderr.write(f"metadata: {source}: {error}\n")


def ensure_metadata_address(bridge):
    addresses = ip_json("-6", "addr", "show", "dev", bridge) or []
    present = any(info.get("local") == METADATA_ADDRESS
                  for link in addresses for info in link.get("addr_info", []))
    if not present:
        run_command(["ip", "-6", "addr", "add", f"{METADATA_ADDRESS}/64", "dev", bridge, "nodad"])


def verb_metadata_serve(spec):
    """The metadata service itself (started by metadata-up; runs until stopped)."""
    import selectors
    import threading
    if sys.argv[1:] != ["metadata-serve"]:
        raise bad_spec("metadata-serve runs only as its own process (metadata-up starts it)")
    check_fields(spec, ["state_dir", "port"])
    state_dir = check_state_dir(spec["state_dir"])
    port = check_int(spec["port"], "port", 1, 65535)
    paths = metadata_server_paths(state_dir)
    selector = selectors.DefaultSelector()
    listeners = {}  # bridge -> (socket, ifindex)
    clients = threading.BoundedSemaphore(METADATA_MAX_CLIENTS)
    per_source = {}  # (bridge ifindex, source address) -> connections being served
    per_source_lock = threading.Lock()
    threading.stack_size(METADATA_THREAD_STACK_BYTES)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # metadata-up sends SIGUSR1 after a net-up: the signal writes into this pipe, which wakes the
    # select below at once instead of at the next rescan.
    wake_reader, wake_writer = os.pipe()
    os.set_blocking(wake_reader, False)
    os.set_blocking(wake_writer, False)
    signal.set_wakeup_fd(wake_writer)
    signal.signal(signal.SIGUSR1, lambda *_: None)
    wake = object()
    selector.register(wake_reader, selectors.EVENT_READ, wake)

    def client_thread(connection, vni, source_key):
        try:
            serve_metadata_client(connection, state_dir, vni, source_key[1])
        finally:
            with per_source_lock:
                per_source[source_key] -= 1
                if not per_source[source_key]:
                    del per_source[source_key]
            clients.release()

    while True:
        wanted = bridges_of_networks(state_dir)
        up = metadata_bridges_up(state_dir)  # from /sys: no process started every rescan
        for bridge in list(listeners):
            if bridge not in wanted or up.get(bridge) != listeners[bridge][1]:
                selector.unregister(listeners[bridge][0])
                listeners.pop(bridge)[0].close()
        for bridge, vni in wanted.items():
            if bridge in listeners or bridge not in up:
                continue
            try:
                ensure_metadata_address(bridge)
                listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind((METADATA_ADDRESS, port, 0, up[bridge]))
                listener.listen(128)
            except (OSError, HostsideError) as error:
                sys.stderr.write(f"metadata: cannot listen on {bridge}: {error}\n")
                continue
            listener.setblocking(False)
            listeners[bridge] = (listener, up[bridge])
            selector.register(listener, selectors.EVENT_READ, vni)
        state = {"bridges": sorted(listeners), "wakes_on": "SIGUSR1",
                 "served": {bridge: index for bridge, (_, index) in listeners.items()}}
        if read_json_file(paths["state"]) != state:
            write_json_file(paths["state"], state)
        for key, _ in selector.select(timeout=METADATA_RESCAN_S):
            if key.data is wake:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_reader, 512)
                continue
            try:
                connection, peer = key.fileobj.accept()
            except OSError:
                continue
            # The listener is bound to one bridge (the scope of its address), so the request came
            # in on that network; the guard ties the source address to one port on it.
            source_key = (peer[3], peer[0].split("%", 1)[0])
            with per_source_lock:
                busy = per_source.get(source_key, 0)
                if busy >= METADATA_CLIENTS_PER_SOURCE or not clients.acquire(blocking=False):
                    connection.close()  # this guest has enough open: others must not starve
                    continue
                per_source[source_key] = busy + 1
            connection.setblocking(True)
            threading.Thread(target=client_thread, args=(connection, key.data, source_key),
                             daemon=True).start()
