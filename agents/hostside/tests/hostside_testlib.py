"""Helpers for the hostside tests: run the program the way SSH does, and build raw frames."""
import hashlib
import ipaddress
import json
import os
import signal
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from agents.hostside.build import build_zipapp
from tests.lab.qmp import devices_on_ports, qmp


def built_program() -> Path:
    """The artifact the control plane ships (agents/hostside/build.py), named by its checksum so
    every test process of one source tree runs the same file."""
    data = build_zipapp()
    path = Path(tempfile.gettempdir()) / f"uncloud_hostside-{hashlib.sha256(data).hexdigest()[:16]}.pyz"
    if not path.exists() or path.read_bytes() != data:
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_bytes(data)
        partial.replace(path)
    return path


PROGRAM = built_program()
TAP_IO = Path(__file__).resolve().parent / "tap_io.py"
# The hypervisor runs the program with its own python3, not with the test runner's venv.
PYTHON = "/usr/bin/python3"


def hostside(host, verb, spec, *, path=None, timeout=180):
    """(exit status, answer) of `python3 uncloud_hostside.pyz VERB` inside the host's namespace."""
    argv = [PYTHON, str(PROGRAM), verb]
    if path is not None:
        argv = ["env", f"PATH={path}", *argv]
    completed = host.run(argv, input=json.dumps(spec), timeout=timeout, check=False)
    assert completed.stdout.count("\n") == 1, (completed.stdout, completed.stderr)
    return completed.returncode, json.loads(completed.stdout)


def ok(host, verb, **spec):
    status, answer = hostside(host, verb, {"state_dir": str(host.state_dir), **spec})
    assert status == 0 and answer["ok"], answer
    return answer["result"]


def fails(host, verb, spec, code):
    status, answer = hostside(host, verb, spec)
    assert not answer["ok"], answer
    assert answer["error"]["code"] == code, answer
    assert status == (2 if code == "bad_spec" else 1)
    return answer["error"]


def inventory(host):
    return ok(host, "inventory")


def eui64(prefix, mac):
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    interface_id = int.from_bytes(bytes(octets[:3] + [0xFF, 0xFE] + octets[3:]), "big")
    return ipaddress.IPv6Address(int(ipaddress.IPv6Network(prefix).network_address) | interface_id)


def link_local(mac):
    return eui64("fe80::/64", mac)


def nic(mac, vni, prefix, **extra):
    return {"mac": mac, "vni": vni, "ipv6": str(eui64(prefix, mac)), **extra}


def vm_spec(vm_uuid, nics, name="vm", **extra):
    return {"uuid": vm_uuid, "name": name, "cores": 1, "memory_mib": 64, "disks": [],
            "nics": nics, "accel": "tcg", **extra}


def net_spec(vni, prefix, host, **extra):
    return {"vni": vni, "prefix": prefix, "underlay_device": host.underlay_device,
            "dns_servers": [str(ipaddress.IPv6Network(prefix).network_address + 0x53)],
            "dns_search": ["example.org"], **extra}


def process_gone(pid):
    """No thread of it runs any more. A killed process's first thread shows Z while its others still
    exit, and they hold its files until the last one is gone: a qemu's tap stayed busy (EBUSY to the
    next process that attached to it, seen once in CI)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return False
        return os.listdir(f"/proc/{pid}/task") == [str(pid)]
    except FileNotFoundError:
        return True


def kill_and_wait(pid):
    """Stand-in for a crashing qemu: SIGKILL one process the test started (through vm-up)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while not process_gone(pid):
        assert time.monotonic() < deadline, f"pid {pid} survived SIGKILL"
        time.sleep(0.05)


def nft_counters(host, chain, family="bridge", table="uncloud"):
    """{rule comment: packets} of one chain of the hostside tables (rules sharing a comment add up)."""
    listing = json.loads(host.run(["nft", "-j", "list", "chain", family, table, chain]).stdout)
    counters = {}
    for item in listing["nftables"]:
        rule = item.get("rule")
        if not rule or "comment" not in rule:
            continue
        for expression in rule["expr"]:
            if "counter" in expression:
                counters[rule["comment"]] = counters.get(rule["comment"], 0) + expression["counter"]["packets"]
    return counters


# --- tap access: what a guest's NIC does, from a namespace ---------------------------------------

def start_tap_io(host, tap, seconds, frames=()):
    """Attach to a tap (which no qemu holds) inside host's namespace; send frames, then print every
    frame the tap receives for `seconds`. Returns the process once it is attached."""
    process = subprocess.Popen(
        ["ip", "netns", "exec", host.netns, PYTHON, str(TAP_IO), tap, str(seconds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdin.write("".join(frame.hex() + "\n" for frame in frames))
    process.stdin.close()
    process.stdin = None  # so communicate() does not flush it again
    first_line = process.stdout.readline()
    assert first_line.strip() == "ready", (first_line, process.stderr.read())
    return process


def received_frames(process):
    output, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors
    return [bytes.fromhex(line.split()[1]) for line in output.splitlines() if line.startswith("rx ")]


# --- raw frames ----------------------------------------------------------------------------------

ALL_NODES_MAC = "33:33:00:00:00:01"
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


def mac_bytes(mac):
    return bytes(int(part, 16) for part in mac.split(":"))


def ethernet(destination, source, ethertype, payload):
    return mac_bytes(destination) + mac_bytes(source) + struct.pack("!H", ethertype) + payload


def ipv6_packet(source, destination, next_header, payload, hop_limit=64):
    return (struct.pack("!IHBB", 6 << 28, len(payload), next_header, hop_limit)
            + ipaddress.IPv6Address(source).packed + ipaddress.IPv6Address(destination).packed
            + payload)


def ipv4_packet(source, destination, protocol, payload):
    def header(checksum):
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, protocol,
                           checksum, ipaddress.IPv4Address(source).packed,
                           ipaddress.IPv4Address(destination).packed)
    return header(internet_checksum(header(0))) + payload


def internet_checksum(data):
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_datagram(source_port, destination_port, payload):
    # Checksum 0: the bridge and nft never look at it, and the readers compare raw bytes.
    return struct.pack("!HHHH", source_port, destination_port, 8 + len(payload), 0) + payload


def router_advertisement(rogue_prefix):
    body = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
    prefix_option = struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0) + \
        ipaddress.IPv6Network(rogue_prefix).network_address.packed
    return body + prefix_option


def ipv6_udp_frame(source_mac, source_ip, marker, ports=(40000, 40000)):
    return ethernet(ALL_NODES_MAC, source_mac, 0x86DD,
                    ipv6_packet(source_ip, "ff02::1", 17, udp_datagram(*ports, marker)))


def devices_on_disk_ports(socket_path):
    return devices_on_ports(socket_path, "diskport")


def block_nodes(socket_path):
    return {entry["inserted"]["node-name"]: entry for entry in qmp(socket_path, "query-block") if "inserted" in entry}
