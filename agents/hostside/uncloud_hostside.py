#!/usr/bin/env python3
"""uncloud host-side program: runs on a hypervisor, one verb per invocation.

    python3 uncloud_hostside.py VERB  < spec.json  > answer.json

Python 3.11 standard library only: the control plane ships this single file to each hypervisor
(checksum-verified) and runs it over SSH. The wire format is described in README.md next to it.
Every verb is idempotent. Every host command is an argument list; no shell is ever involved.
"""

import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid as uuid_module

VERSION = "1"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_SPEC = 2

NFT_FAMILY = "bridge"
NFT_TABLE = "uncloud"
SG_FAMILY = "inet"
SG_TABLE = "uncloud_sg"
VXLAN_PORT = 4789
VXLAN_TTL = 5
VXLAN_GROUP_BASE = ipaddress.IPv6Address("ff05::")
# Every host's bridge for a network carries this MAC (plus the VNI in the low 24 bits), so the
# router link-local address guests learn is the same wherever they run. The control plane must
# never hand out guest MACs from this prefix.
ROUTER_MAC_PREFIX = (0x02, 0x75, 0x63)
RADVD_RDNSS_LIFETIME_S = 600
DEFAULT_ROUTER_LIFETIME_S = 1800
# A unix socket path must fit in sun_path (108 bytes with the NUL); the longest one we create is
# <state_dir>/vms/<uuid>/qmp.sock.
MAX_SOCKET_PATH = 107
LONGEST_SOCKET_SUFFIX = len("/vms/") + 36 + len("/qmp.sock")
MAX_STATE_DIR = MAX_SOCKET_PATH - LONGEST_SOCKET_SUFFIX
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
QEMU_BINARY = "qemu-system-x86_64"
COMMAND_TIMEOUT_S = 30
QEMU_START_TIMEOUT_S = 60
LOCK_TIMEOUT_S = 60
# Every NIC sits on a PCIe root port of its own, and spare ports wait for disks, so both can be
# plugged into and out of a running guest (q35's root bus pcie.0 takes no hot-plug).
MAX_NICS = 8
MAX_HOTPLUG_DISKS = 8

# No component may start with "-": a path must never look like an option to any program.
SAFE_PATH_RE = re.compile(r"^(/[A-Za-z0-9._+][A-Za-z0-9._+-]*)+$")
INTERFACE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
# Tap names also become nft chain names, so they get the stricter nft identifier alphabet.
TAP_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,14}$")
VM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
DOMAIN_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
CMDLINE_RE = re.compile(r"^[\x20-\x7e]{0,4096}$")
RESERVED_INTERFACE_PREFIXES = ("br", "vxlan", "lo", "eth", "ul")


class HostsideError(Exception):
    def __init__(self, code, message, *, stderr="", argv=None, details=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.stderr = stderr
        self.argv = argv or []
        self.details = details or {}

    def as_dict(self):
        error = {"code": self.code, "message": self.message, "stderr": self.stderr, "argv": self.argv}
        error.update(self.details)
        return error


def bad_spec(message):
    return HostsideError("bad_spec", message)


# ---------------------------------------------------------------------------------------------
# Spec validation: everything that reaches a command line passes through one of these first.
# ---------------------------------------------------------------------------------------------

def check_fields(spec, required, optional=()):
    if not isinstance(spec, dict):
        raise bad_spec("spec must be a JSON object")
    missing = [name for name in required if name not in spec]
    if missing:
        raise bad_spec(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(set(spec) - set(required) - set(optional))
    if unknown:
        raise bad_spec(f"unknown field(s): {', '.join(unknown)}")


def check_int(value, field, low, high):
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_spec(f"{field} must be an integer")
    if not low <= value <= high:
        raise bad_spec(f"{field} must be between {low} and {high}")
    return value


def check_number(value, field, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_spec(f"{field} must be a number")
    if not low <= value <= high:
        raise bad_spec(f"{field} must be between {low} and {high}")
    return value


def check_bool(value, field):
    if not isinstance(value, bool):
        raise bad_spec(f"{field} must be true or false")
    return value


def check_string(value, field, pattern, explanation):
    if not isinstance(value, str) or not pattern.match(value):
        raise bad_spec(f"{field} is invalid: {explanation}")
    return value


def check_state_dir(value):
    if not isinstance(value, str) or not SAFE_PATH_RE.match(value):
        raise bad_spec("state_dir must be an absolute path of letters, digits and ._/+- "
                       "(no component starting with -)")
    if os.path.normpath(value) != value or value == "/":
        raise bad_spec("state_dir must be a normalised absolute path other than /")
    if len(value) > MAX_STATE_DIR:
        raise bad_spec(f"state_dir is longer than {MAX_STATE_DIR} characters: the QMP socket path "
                       "below it would not fit in a unix socket address")
    return value


def check_path_under(value, field, state_dir):
    """A file the spec names must be an existing regular file below state_dir, symlinks included."""
    if not isinstance(value, str) or not SAFE_PATH_RE.match(value):
        raise bad_spec(f"{field} must be an absolute path of letters, digits and ._/+-")
    if os.path.normpath(value) != value:
        raise bad_spec(f"{field} must be a normalised path")
    if os.path.commonpath([state_dir, value]) != state_dir or value == state_dir:
        raise bad_spec(f"{field} must be below state_dir")
    real_state_dir = os.path.realpath(state_dir)
    real_value = os.path.realpath(value)
    if os.path.commonpath([real_state_dir, real_value]) != real_state_dir:
        raise bad_spec(f"{field} resolves outside state_dir")
    if not os.path.isfile(real_value):
        raise bad_spec(f"{field} is not an existing regular file: {value}")
    return value


def check_vni(value, field="vni"):
    return check_int(value, field, 1, 16777215)


def check_uuid(value):
    if not isinstance(value, str):
        raise bad_spec("uuid must be a string")
    try:
        parsed = uuid_module.UUID(value)
    except ValueError:
        raise bad_spec("uuid is not a UUID") from None
    if str(parsed) != value:
        raise bad_spec("uuid must be in canonical lowercase 8-4-4-4-12 form")
    return value


def check_mac(value, field):
    if not isinstance(value, str) or not MAC_RE.match(value.lower()):
        raise bad_spec(f"{field} must be a MAC address like 02:00:f0:a9:c4:4e")
    mac = value.lower()
    first_octet = int(mac[:2], 16)
    if first_octet & 0x01:
        raise bad_spec(f"{field} must be a unicast MAC")
    if mac == "00:00:00:00:00:00":
        raise bad_spec(f"{field} must not be all zero")
    if tuple(int(part, 16) for part in mac.split(":")[:3]) == ROUTER_MAC_PREFIX:
        raise bad_spec(f"{field} is in the range reserved for network routers (02:75:63:...)")
    return mac


def check_prefix64(value, field="prefix"):
    if not isinstance(value, str):
        raise bad_spec(f"{field} must be a string like 2001:db8:1:1::/64")
    try:
        network = ipaddress.IPv6Network(value, strict=True)
    except ValueError:
        raise bad_spec(f"{field} must be an IPv6 network with no host bits set") from None
    if network.prefixlen != 64:
        raise bad_spec(f"{field} must be a /64 (SLAAC needs 64-bit interface ids)")
    if network.is_multicast or network.is_link_local or network.is_loopback:
        raise bad_spec(f"{field} must be a unicast prefix")
    return network


def check_ipv6_address(value, field):
    if not isinstance(value, str):
        raise bad_spec(f"{field} must be an IPv6 address")
    try:
        return ipaddress.IPv6Address(value)
    except ValueError:
        raise bad_spec(f"{field} must be an IPv6 address") from None


def check_domain(value, field):
    if not isinstance(value, str) or not 0 < len(value) <= 253:
        raise bad_spec(f"{field} must be a domain name")
    labels = value.rstrip(".").split(".")
    if not all(DOMAIN_LABEL_RE.match(label) for label in labels):
        raise bad_spec(f"{field} must be a domain name of letters, digits and hyphens")
    return value.rstrip(".").lower()


def check_list(value, field, max_items):
    if not isinstance(value, list):
        raise bad_spec(f"{field} must be a list")
    if len(value) > max_items:
        raise bad_spec(f"{field} has more than {max_items} items")
    return value


def check_interface_name(value, field):
    return check_string(value, field, INTERFACE_NAME_RE, "an interface name of at most 15 letters, "
                        "digits and _.- characters")


# ---------------------------------------------------------------------------------------------
# Host commands
# ---------------------------------------------------------------------------------------------

def search_path():
    return os.environ.get("PATH") or DEFAULT_PATH


def find_binary(name):
    return shutil.which(name, path=search_path())


def require_binaries(*names):
    missing = [name for name in names if find_binary(name) is None]
    if missing:
        raise HostsideError("missing_binary", f"not installed on this host: {', '.join(missing)}",
                            details={"missing": missing})


def looks_like_disk_full(text):
    return "No space left on device" in text or "Disk quota exceeded" in text


def run_command(argv, *, input_text=None, timeout=COMMAND_TIMEOUT_S, check=True):
    binary = find_binary(argv[0])
    if binary is None:
        raise HostsideError("missing_binary", f"not installed on this host: {argv[0]}",
                            argv=argv, details={"missing": [argv[0]]})
    try:
        completed = subprocess.run([binary, *argv[1:]], input=input_text, capture_output=True,
                                   text=True, timeout=timeout, stdin=None if input_text is not None
                                   else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise HostsideError("timeout", f"{argv[0]} did not finish within {timeout} s",
                            argv=argv) from None
    if check and completed.returncode != 0:
        raise command_failure(argv, completed)
    return completed


def command_failure(argv, completed):
    stderr = (completed.stderr or "") + (completed.stdout or "")
    if looks_like_disk_full(stderr):
        return HostsideError("disk_full", f"{argv[0]} ran out of disk space", stderr=stderr, argv=argv)
    return HostsideError("command_failed", f"{argv[0]} exited with status {completed.returncode}",
                         stderr=stderr, argv=argv)


def ip_json(*args):
    """`ip -j -d ...` parsed, or None when the device does not exist."""
    completed = run_command(["ip", "-j", "-d", *args], check=False)
    if completed.returncode != 0:
        if "does not exist" in completed.stderr or "Cannot find device" in completed.stderr:
            return None
        raise command_failure(["ip", "-j", "-d", *args], completed)
    return json.loads(completed.stdout or "[]")


def link_info(name):
    links = ip_json("link", "show", "dev", name)
    return links[0] if links else None


def link_kind(link):
    return link.get("linkinfo", {}).get("info_kind")


def write_interface_sysctl(interface, key, value):
    # /proc/sys/net belongs to the network namespace this program runs in.
    with open(f"/proc/sys/net/ipv6/conf/{interface}/{key}", "w") as sysctl_file:
        sysctl_file.write(f"{value}\n")


# ---------------------------------------------------------------------------------------------
# Files and processes under state_dir
# ---------------------------------------------------------------------------------------------

def ensure_directory(path):
    os.makedirs(path, mode=0o700, exist_ok=True)


def write_file_atomically(path, text):
    temporary = f"{path}.tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def read_text(path):
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def read_json_file(path):
    text = read_text(path)
    return None if text is None else json.loads(text)


def write_json_file(path, data):
    write_file_atomically(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def remove_file(path):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@contextlib.contextmanager
def host_lock(state_dir):
    """One mutating verb at a time per state_dir: the nft table is rebuilt from files, and two
    concurrent rebuilds could otherwise drop each other's ports."""
    ensure_directory(state_dir)
    with file_lock(os.path.join(state_dir, ".lock"), "another verb holds the host lock"):
        yield


@contextlib.contextmanager
def file_lock(path, busy_message):
    with open(path, "w") as lock_file:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HostsideError("timeout", busy_message) from None
                # Verbs hold the lock for tens of milliseconds: a short wait, so the next one in
                # line starts soon after the holder lets go.
                time.sleep(0.005)
        yield


def process_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def process_stat_fields(pid):
    """The fields of /proc/PID/stat after the command name: [state, ppid, ...], or None."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()


def process_is_alive(pid):
    """True for a live process; a zombie (an exited daemon nobody reaped yet) counts as gone."""
    fields = process_stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def parent_pid(pid):
    fields = process_stat_fields(pid)
    return int(fields[1]) if fields else None


def read_pid_file(path):
    text = read_text(path)
    if text is None or not text.strip().isdigit():
        return None
    return int(text.strip())


def owned_process(pid_file, marker):
    """The pid in pid_file when that process is alive and its command line names marker (a path
    below state_dir). Other test hosts share this process table, so a bare pid is not proof."""
    pid = read_pid_file(pid_file)
    if pid is None or not process_is_alive(pid):
        return None
    if not any(marker in argument for argument in process_cmdline(pid)):
        return None
    return pid


def wait_for_exit(pid, timeout_s):
    """True once pid has exited (a zombie counts). The process is seldom our child (qemu and radvd
    daemonize), so a pidfd is what wakes us the moment it exits, not the next tick of a poll."""
    deadline = time.monotonic() + timeout_s
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):  # Python < 3.9 or kernel < 5.3: poll
        pidfd = None
    try:
        poller = None
        if pidfd is not None:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
        while process_is_alive(pid):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if poller is None:
                time.sleep(min(remaining, 0.02))
            else:
                poller.poll(min(remaining, 1.0) * 1000)
        return True
    finally:
        if pidfd is not None:
            os.close(pidfd)


def send_signal(pid, signal_number):
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal_number)


def stop_process(pid, term_wait_s=5):
    send_signal(pid, signal.SIGTERM)
    if not wait_for_exit(pid, term_wait_s):
        send_signal(pid, signal.SIGKILL)
        wait_for_exit(pid, 5)


def networks_dir(state_dir):
    return os.path.join(state_dir, "networks")


def network_dir(state_dir, vni):
    return os.path.join(networks_dir(state_dir), str(vni))


def vms_dir(state_dir):
    return os.path.join(state_dir, "vms")


def vm_dir(state_dir, vm_uuid):
    return os.path.join(vms_dir(state_dir), vm_uuid)


def ports_dir(state_dir):
    return os.path.join(state_dir, "ports")


# ---------------------------------------------------------------------------------------------
# Addresses and names
# ---------------------------------------------------------------------------------------------

def vxlan_name(vni):
    return f"vxlan{vni}"


def bridge_name(vni):
    return f"br{vni}"


def vxlan_group(vni):
    """ff05::/16 with the VNI as the low 32 bits: VNI 100 -> ff05::64."""
    return ipaddress.IPv6Address(int(VXLAN_GROUP_BASE) + vni)


def router_mac(vni):
    return ":".join(f"{octet:02x}" for octet in (*ROUTER_MAC_PREFIX, *vni.to_bytes(3, "big")))


def eui64_interface_id(mac):
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    return int.from_bytes(bytes(octets[:3] + [0xFF, 0xFE] + octets[3:]), "big")


def eui64_address(prefix, mac):
    return ipaddress.IPv6Address(int(prefix.network_address) | eui64_interface_id(mac))


def link_local_address(mac):
    return ipaddress.IPv6Address(int(ipaddress.IPv6Address("fe80::")) | eui64_interface_id(mac))


def derived_tap_name(vm_uuid, nic_index):
    # Hashed, not a slice of the UUID: time-ordered UUIDs (v1, v7) share their leading digits.
    digest = hashlib.sha256(vm_uuid.encode()).hexdigest()
    return f"uc{digest[:10]}n{nic_index}"


# ---------------------------------------------------------------------------------------------
# nftables: the whole table is rebuilt from the files under state_dir on every change
# ---------------------------------------------------------------------------------------------

def load_port_states(state_dir):
    directory = ports_dir(state_dir)
    if not os.path.isdir(directory):
        return []
    ports = [read_json_file(os.path.join(directory, name))
             for name in sorted(os.listdir(directory)) if name.endswith(".json")]
    return [port for port in ports if port]


def load_network_states(state_dir):
    directory = networks_dir(state_dir)
    if not os.path.isdir(directory):
        return []
    states = [read_json_file(os.path.join(directory, name, "network.json"))
              for name in sorted(os.listdir(directory), key=lambda name: (len(name), name))]
    return [state for state in states if state]


def render_guard_chain(port):
    tap = port["tap"]
    allowed_sources = ", ".join(["::", port["link_local"], port["ipv6"]])
    return [
        f"    chain guard_{tap} {{",
        f"        ether saddr != {port['mac']} counter drop comment \"spoofed-mac\"",
        # Only IPv6, plus ARP/IPv4 so the DHCPv4 rule below means something; this also drops
        # 802.1Q-tagged frames, which would otherwise slip past the ip6 matches.
        "        ether type != { ip6, ip, arp } counter drop comment \"bad-ethertype\"",
        f"        ip6 saddr != {{ {allowed_sources} }} counter drop comment \"spoofed-ipv6\"",
        "        icmpv6 type nd-router-advert counter drop comment \"router-advert\"",
        "        icmpv6 type nd-redirect counter drop comment \"redirect\"",
        "        udp sport 547 udp dport 546 counter drop comment \"dhcpv6-server\"",
        # The kernel skips transport-header matches (udp sport ...) for an IPv4 packet whose
        # header checksum is wrong, so DHCPv4 is matched at fixed offsets instead, and IPv4
        # headers with options (which would move those offsets) are not accepted from guests.
        "        ether type ip @nh,4,4 != 5 counter drop comment \"ipv4-options\"",
        "        ether type ip @nh,72,8 17 @nh,160,16 67 @nh,176,16 68 counter drop "
        "comment \"dhcpv4-server\"",
        "    }",
    ]


INGRESS_PROTOCOLS = ("tcp", "udp", "icmpv6", "any")
MAX_INGRESS_RULES = 64


def parse_ingress_rules(rules, field):
    """A security group's ingress rules: [{protocol, port_min?, port_max?, source}, ...]."""
    rules = check_list([] if rules is None else rules, field, MAX_INGRESS_RULES)
    parsed = []
    for number, rule in enumerate(rules):
        where = f"{field}[{number}]"
        check_fields(rule, ["protocol", "source"], ["port_min", "port_max"])
        protocol = rule["protocol"]
        if protocol not in INGRESS_PROTOCOLS:
            raise bad_spec(f"{where}.protocol must be one of {', '.join(INGRESS_PROTOCOLS)}")
        try:
            source = ipaddress.IPv6Network(rule["source"], strict=True) \
                if isinstance(rule["source"], str) else None
        except ValueError:
            source = None
        if source is None:
            raise bad_spec(f"{where}.source must be an IPv6 prefix such as ::/0")
        has_ports = "port_min" in rule or "port_max" in rule
        if has_ports and protocol not in ("tcp", "udp"):
            raise bad_spec(f"{where}: ports only go with tcp or udp")
        port_min = check_int(rule.get("port_min", 1), f"{where}.port_min", 1, 65535)
        port_max = check_int(rule.get("port_max", port_min if has_ports else 65535),
                             f"{where}.port_max", port_min, 65535)
        parsed.append({"protocol": protocol, "source": str(source),
                       "port_min": port_min, "port_max": port_max})
    return parsed


def render_ingress_rule(rule):
    match = [] if rule["source"] == "::/0" else [f"ip6 saddr {rule['source']}"]
    if rule["protocol"] == "any":
        match.append("meta nfproto ipv6")
    elif rule["protocol"] == "icmpv6":
        match.append("meta l4proto ipv6-icmp")
    else:
        ports = str(rule["port_min"]) if rule["port_min"] == rule["port_max"] \
            else f"{rule['port_min']}-{rule['port_max']}"
        match.append(f"meta l4proto {rule['protocol']} th dport {ports}")
    return f"        {' '.join(match)} accept"


def render_security_group_chain(port):
    """The guest's stateful ingress: replies to its own traffic, ICMPv6 (neighbour discovery, path
    MTU, ping) and what its rules open; everything else towards it is dropped."""
    return [
        f"    chain ingress_{port['tap']} {{",
        "        ct state established,related accept",
        "        ct state invalid counter drop comment \"invalid\"",
        "        meta l4proto ipv6-icmp accept",
        *(render_ingress_rule(rule) for rule in port.get("security_group_ingress", [])),
        "        counter drop comment \"security-group\"",
        "    }",
    ]


def render_ruleset(networks, ports):
    lines = [
        f"table {NFT_FAMILY} {NFT_TABLE}",
        f"delete table {NFT_FAMILY} {NFT_TABLE}",
        f"table {NFT_FAMILY} {NFT_TABLE} {{",
        # Every host's bridge has the same router MAC and link-local address; keeping frames the
        # host itself sends off the VXLAN means guests only ever talk to their local router.
        "    chain router_stays_local {",
        "        type filter hook output priority 0; policy accept;",
    ]
    for network in networks:
        lines.append(f"        oifname \"{network['vxlan']}\" ether saddr {network['router_mac']} "
                     "counter drop comment \"router-local\"")
    lines.append("    }")
    # Multicast from a guest passes both the forward and the input hook: guard both.
    for hook in ("forward", "input"):
        lines += [f"    chain guest_ports_{hook} {{",
                  f"        type filter hook {hook} priority 0; policy accept;"]
        for port in ports:
            lines.append(f"        iifname \"{port['tap']}\" jump guard_{port['tap']}")
        lines.append("    }")
    for port in ports:
        lines += render_guard_chain(port)
    lines.append("}")
    lines += render_security_group_table(networks, ports)
    return "\n".join(lines) + "\n"


def render_security_group_table(networks, ports):
    """Security groups need connection tracking, which the bridge family lacks on many kernels: the
    bridges hand IPv6 to the inet hooks (nf_call_ip6tables), where a guest is known by its addresses
    (anti-spoofing ties those to its port). Bridged and routed traffic meet the same chain."""
    lines = [
        f"table {SG_FAMILY} {SG_TABLE}",
        f"delete table {SG_FAMILY} {SG_TABLE}",
        f"table {SG_FAMILY} {SG_TABLE} {{",
        "    chain towards_guests {",
        "        type filter hook forward priority 0; policy accept;",
    ]
    # Networks are isolated from each other: this host routes between a network and the outside
    # (underlay, NAT64), never from one customer network into another.
    for network in networks:
        lines.append(f"        iifname \"{network['bridge']}\" oifname \"br*\" oifname != \"{network['bridge']}\" "
                     "counter drop comment \"between-networks\"")
    if ports:
        targets = ", ".join(f"{address} : jump ingress_{port['tap']}"
                            for port in ports for address in (port["ipv6"], port["link_local"]))
        lines.append(f"        ip6 daddr vmap {{ {targets} }}")
    lines.append("    }")
    for port in ports:
        lines += render_security_group_chain(port)
    lines.append("}")
    return lines


def nft_table_chains():
    completed = run_command(["nft", "-j", "list", "table", NFT_FAMILY, NFT_TABLE], check=False)
    if completed.returncode != 0:
        return None
    items = json.loads(completed.stdout).get("nftables", [])
    return sorted(item["chain"]["name"] for item in items if "chain" in item)


def apply_ruleset(state_dir):
    """Rebuild the table from state files and swap it in one transaction. Skipped when nothing
    changed, so repeating a verb does not reset the counters. No `nft -c` first: `nft -f` sends
    the whole file as one netlink batch, which the kernel applies entirely or not at all (the old
    table stays, and the error is the one -c would give), so a check would only double the cost."""
    ruleset = render_ruleset(load_network_states(state_dir), load_port_states(state_dir))
    ruleset_path = os.path.join(state_dir, "nftables.conf")
    if read_text(ruleset_path) == ruleset and nft_table_chains() is not None:
        return False
    candidate_path = os.path.join(state_dir, "nftables.conf.candidate")
    write_file_atomically(candidate_path, ruleset)
    run_command(["nft", "-f", candidate_path])
    os.replace(candidate_path, ruleset_path)
    return True


# ---------------------------------------------------------------------------------------------
# host-info
# ---------------------------------------------------------------------------------------------

KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
KVM_PROBE_RUN_S = 0.5
KVM_PROBE_TIMEOUT_S = 20
HOST_BINARIES = ("ip", "nft", "radvd", QEMU_BINARY, "qemu-img")


def program_checksum():
    with open(os.path.abspath(__file__), "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def kvm_device_opens():
    """None when /dev/kvm opens and speaks the stable API, else why not."""
    try:
        descriptor = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as error:
        return f"/dev/kvm: {error.strerror}"
    try:
        version = fcntl.ioctl(descriptor, KVM_GET_API_VERSION)
    except OSError as error:
        return f"/dev/kvm: KVM_GET_API_VERSION: {error.strerror}"
    finally:
        os.close(descriptor)
    return None if version == KVM_API_VERSION else f"/dev/kvm speaks KVM API {version}, not {KVM_API_VERSION}"


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


def kvm_probe_guest(accel="kvm"):
    """Start a throw-away guest with accel=kvm (no disk, no NIC, 32 MiB) and let its firmware run
    for KVM_PROBE_RUN_S: (True, why) when it still runs, else (False, qemu's own words). A /dev/kvm
    that opens proves nothing: a nested KVM without vmx/svm opens fine and qemu then dies with
    'failed to set MSR 0x10a' as soon as it loads the vCPU registers."""
    binary = find_binary(QEMU_BINARY)
    if binary is None:
        return False, f"{QEMU_BINARY} is not installed"
    # accel is a parameter only so a test can prove on any machine that a guest that does run is
    # recognised (with tcg).
    cpu = ["-cpu", "host"] if accel == "kvm" else []
    argv = [binary, "-machine", f"q35,accel={accel}", *cpu, "-m", "32", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-S", "-qmp", "stdio"]
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    qmp = QmpStdio(process, time.monotonic() + KVM_PROBE_TIMEOUT_S)
    try:
        qmp.answer()  # the greeting
        qmp.command("qmp_capabilities")
        qmp.command("cont")
        time.sleep(KVM_PROBE_RUN_S)
        status = qmp.command("query-status").get("return", {}).get("status")
        if status != "running":
            return False, f"a {accel} test guest stopped with status {status}"
        return True, f"a {accel} test guest ran for {KVM_PROBE_RUN_S} s"
    except TimeoutError:
        return False, f"a {accel} test guest did not answer within {KVM_PROBE_TIMEOUT_S} s"
    except (EOFError, OSError, ValueError):
        process.kill()
        stderr = process.communicate(timeout=10)[1].decode(errors="replace").strip()
        first_error = qemu_error_lines(stderr)[:1] or [f"qemu exited with status {process.returncode}"]
        return False, f"a {accel} test guest died: {first_error[0]}"
    finally:
        if process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired, ValueError, OSError):
            process.communicate(timeout=10)


def kvm_probe():
    """{"usable": bool, "reason": str}: whether guests can really run with accel=kvm here."""
    reason = kvm_device_opens()
    if reason is not None:
        return {"usable": False, "reason": reason}
    usable, reason = kvm_probe_guest()
    return {"usable": usable, "reason": reason}


def kvm_probe_identity():
    """What a cached probe is valid for: this boot (modules, nesting) and this qemu binary."""
    binary = find_binary(QEMU_BINARY)
    try:
        qemu = os.stat(binary) if binary else None
    except OSError:
        qemu = None
    return {"boot_id": (read_text("/proc/sys/kernel/random/boot_id") or "").strip(),
            "qemu": [binary, qemu.st_mtime_ns, qemu.st_size] if qemu else None}


def kvm_probe_cached(state_dir, fresh=False):
    """The probe's result, run again when asked (host-info) or when the boot or qemu changed;
    vm-up with accel auto reads it, so a VM start pays for a probe at most once per boot."""
    path = os.path.join(state_dir, "kvm-probe.json")
    identity = kvm_probe_identity()
    cached = read_json_file(path)
    if not fresh and isinstance(cached, dict) and cached.get("identity") == identity:
        return cached["result"]
    result = kvm_probe()
    write_json_file(path, {"identity": identity, "result": result})
    return result


def qemu_error_lines(output):
    """qemu's own complaints ("qemu-system-x86_64: ..."), first; other lines after them."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    own = [line for line in lines if line.startswith(f"{QEMU_BINARY}:")]
    return own + [line for line in lines if line not in own]


def memory_mib():
    values = {}
    for line in read_text("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0]) // 1024
    return {"total": values.get("MemTotal"), "available": values.get("MemAvailable")}


def kvm_facts(probe):
    return {"kvm_usable": probe["usable"], "kvm_reason": probe["reason"]}


def verb_host_info(spec):
    check_fields(spec, ["state_dir"])
    state_dir = check_state_dir(spec["state_dir"])
    ensure_directory(state_dir)
    disk = os.statvfs(state_dir)
    return {
        "version": VERSION,
        "sha256": program_checksum(),
        "python": sys.version.split()[0],
        "binaries": {name: find_binary(name) for name in HOST_BINARIES},
        **kvm_facts(kvm_probe_cached(state_dir, fresh=True)),
        "cores": os.cpu_count(),
        "memory_mib": memory_mib(),
        "state_dir": state_dir,
        "disk_free_bytes": disk.f_bavail * disk.f_frsize,
        "disk_total_bytes": disk.f_blocks * disk.f_frsize,
        "pid": os.getpid(),  # of the process that answered (a long-lived `serve` one, usually)
    }


# ---------------------------------------------------------------------------------------------
# net-up / net-down
# ---------------------------------------------------------------------------------------------

def parse_net_up_spec(spec):
    check_fields(spec, ["state_dir", "vni", "prefix", "underlay_device"],
                 ["dns_servers", "dns_search", "mtu", "default_router", "routes"])
    dns_servers = check_list(spec.get("dns_servers", []), "dns_servers", 3)
    dns_search = check_list(spec.get("dns_search", []), "dns_search", 6)
    return {
        "default_router": check_bool(spec.get("default_router", False), "default_router"),
        "routes": [parse_underlay_route(route, f"routes[{index}]")
                   for index, route in enumerate(check_list(spec.get("routes", []), "routes", 16))],
        "state_dir": check_state_dir(spec["state_dir"]),
        "vni": check_vni(spec["vni"]),
        "prefix": check_prefix64(spec["prefix"]),
        "underlay_device": check_interface_name(spec["underlay_device"], "underlay_device"),
        "dns_servers": [str(check_ipv6_address(server, "dns_servers[]")) for server in dns_servers],
        "dns_search": [check_domain(domain, "dns_search[]") for domain in dns_search],
        "mtu": None if spec.get("mtu") is None else check_int(spec["mtu"], "mtu", 1280, 9000),
    }


def parse_underlay_route(route, field):
    """A prefix the guests reach through another host, e.g. a NAT64 /96 via the translator's host."""
    check_fields(route, ["prefix", "via"])
    try:
        prefix = ipaddress.IPv6Network(route["prefix"], strict=True) \
            if isinstance(route["prefix"], str) else None
    except ValueError:
        prefix = None
    if prefix is None or prefix.prefixlen < 16:
        raise bad_spec(f"{field}.prefix must be an IPv6 prefix of /16 or longer")
    via = check_ipv6_address(route["via"], f"{field}.via")
    if via.is_multicast or via.is_unspecified or via.is_loopback:
        raise bad_spec(f"{field}.via must be a unicast address")
    return {"prefix": str(prefix), "via": str(via)}


def ensure_underlay_routes(routes, underlay_device, changes):
    wanted = [f"route replace {route['prefix']} via {route['via']} dev {underlay_device}"
              for route in routes]
    if wanted:
        run_command(["ip", "-6", "-batch", "-"], input_text="\n".join(wanted) + "\n")
        changes.append(f"routes {', '.join(route['prefix'] for route in routes)}")


def vxlan_matches(link, vni, underlay_device):
    data = link.get("linkinfo", {}).get("info_data", {})
    return (link_kind(link) == "vxlan" and data.get("id") == vni
            and data.get("group6") == str(vxlan_group(vni)) and data.get("link") == underlay_device
            and data.get("port") == VXLAN_PORT and data.get("ttl") == VXLAN_TTL)


def ensure_vxlan(vni, underlay_device, changes):
    name = vxlan_name(vni)
    link = link_info(name)
    if link is not None and vxlan_matches(link, vni, underlay_device):
        return
    if link is not None:
        run_command(["ip", "link", "del", "dev", name])
        changes.append(f"replaced {name}")
    else:
        changes.append(f"created {name}")
    run_command(["ip", "-6", "link", "add", name, "type", "vxlan", "id", str(vni), "dstport",
                 str(VXLAN_PORT), "group", str(vxlan_group(vni)), "dev", underlay_device,
                 "ttl", str(VXLAN_TTL)])
    # A bridge port needs no addresses of its own.
    write_interface_sysctl(name, "disable_ipv6", 1)


def ensure_bridge(vni, changes):
    name = bridge_name(vni)
    link = link_info(name)
    if link is not None and link_kind(link) != "bridge":
        raise HostsideError("in_use", f"{name} exists and is not a bridge")
    if link is None:
        run_command(["ip", "link", "add", name, "type", "bridge"])
        changes.append(f"created {name}")
        link = link_info(name)
    # The router's link-local address is shared by every host in the network (see
    # router_stays_local), so duplicate address detection must not fight over it.
    write_interface_sysctl(name, "accept_dad", 0)
    write_interface_sysctl(name, "accept_ra", 0)
    write_interface_sysctl(name, "autoconf", 0)
    wanted_mac = router_mac(vni)
    if link.get("address") != wanted_mac:
        run_command(["ip", "link", "set", "dev", name, "address", wanted_mac])
        changes.append(f"set {name} address")
    # No multicast snooping: every multicast frame is flooded to every port of this small bridge,
    # which keeps neighbour discovery across the VXLAN independent of MLD state. IPv6 crossing the
    # bridge also passes the inet hooks, where the security groups' connection tracking lives.
    info = link.get("linkinfo", {}).get("info_data", {})
    if info.get("mcast_snooping") != 0 or info.get("nf_call_ip6tables") != 1:
        run_command(["ip", "link", "set", "dev", name, "type", "bridge", "mcast_snooping", "0",
                     "nf_call_ip6tables", "1"])


def ensure_port_of_bridge(port_name, bridge, changes, mtu=None):
    link = link_info(port_name)
    if link.get("master") != bridge:
        run_command(["ip", "link", "set", "dev", port_name, "master", bridge])
        changes.append(f"attached {port_name} to {bridge}")
    if mtu is not None and link.get("mtu") != mtu:
        run_command(["ip", "link", "set", "dev", port_name, "mtu", str(mtu)])
    if "UP" not in link.get("flags", []):
        run_command(["ip", "link", "set", "dev", port_name, "up"])


def ensure_link_up(name):
    link = link_info(name)
    if "UP" not in link.get("flags", []):
        run_command(["ip", "link", "set", "dev", name, "up"])


def ensure_ipv6_forwarding():
    # radvd only advertises when the host forwards IPv6.
    path = "/proc/sys/net/ipv6/conf/all/forwarding"
    if read_text(path).strip() != "1":
        with open(path, "w") as handle:
            handle.write("1\n")


def render_radvd_config(bridge, prefix, mtu, dns_servers, dns_search, default_router=False):
    lines = [
        f"interface {bridge} {{",
        "    AdvSendAdvert on;",
        "    MinRtrAdvInterval 3;",
        "    MaxRtrAdvInterval 10;",
        f"    AdvLinkMTU {mtu};",
        # Every host is its local guests' router (same MAC and link-local everywhere), when the
        # control plane says routing out of the network exists.
        f"    AdvDefaultLifetime {DEFAULT_ROUTER_LIFETIME_S if default_router else 0};",
        f"    prefix {prefix} {{",
        "        AdvOnLink on;",
        "        AdvAutonomous on;",
        "    };",
    ]
    if dns_servers:
        lines += [f"    RDNSS {' '.join(dns_servers)} {{",
                  f"        AdvRDNSSLifetime {RADVD_RDNSS_LIFETIME_S};", "    };"]
    if dns_search:
        lines += [f"    DNSSL {' '.join(dns_search)} {{",
                  f"        AdvDNSSLLifetime {RADVD_RDNSS_LIFETIME_S};", "    };"]
    lines.append("};")
    return "\n".join(lines) + "\n"


def radvd_paths(state_dir, vni):
    directory = network_dir(state_dir, vni)
    return {"config": os.path.join(directory, "radvd.conf"),
            "pid": os.path.join(directory, "radvd.pid"),
            "log": os.path.join(directory, "radvd.log")}


def running_radvd(state_dir, vni):
    paths = radvd_paths(state_dir, vni)
    return owned_process(paths["pid"], paths["config"])


def ensure_radvd(state_dir, vni, config_text, changes):
    paths = radvd_paths(state_dir, vni)
    pid = running_radvd(state_dir, vni)
    if pid is not None and read_text(paths["config"]) == config_text:
        return pid
    candidate = paths["config"] + ".candidate"
    write_file_atomically(candidate, config_text)
    run_command(["radvd", "--configtest", "-C", candidate])
    os.replace(candidate, paths["config"])
    if pid is not None:
        stop_process(pid)
        changes.append("restarted radvd")
    else:
        changes.append("started radvd")
    remove_file(paths["pid"])
    run_command(["radvd", "-C", paths["config"], "-p", paths["pid"], "-m", "logfile",
                 "-l", paths["log"]])
    return wait_for_radvd(state_dir, vni)


def wait_for_radvd(state_dir, vni):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pid = running_radvd(state_dir, vni)
        if pid is not None:
            return pid
        time.sleep(0.05)
    log_tail = tail_of_file(radvd_paths(state_dir, vni)["log"])
    raise HostsideError("command_failed", "radvd did not stay up", stderr=log_tail,
                        argv=["radvd", "-C", radvd_paths(state_dir, vni)["config"]])


def verb_net_up(spec):
    net = parse_net_up_spec(spec)
    require_binaries("ip", "nft", "radvd")
    state_dir, vni = net["state_dir"], net["vni"]
    with host_lock(state_dir):
        if link_info(net["underlay_device"]) is None:
            raise HostsideError("not_found", f"underlay device {net['underlay_device']} does not exist")
        changes = []
        ensure_directory(network_dir(state_dir, vni))
        ensure_vxlan(vni, net["underlay_device"], changes)
        ensure_bridge(vni, changes)
        ensure_port_of_bridge(vxlan_name(vni), bridge_name(vni), changes, mtu=net["mtu"])
        ensure_link_up(bridge_name(vni))
        mtu = link_info(vxlan_name(vni))["mtu"]
        ensure_ipv6_forwarding()
        network_state = {
            "vni": vni, "prefix": str(net["prefix"]), "underlay_device": net["underlay_device"],
            "vxlan": vxlan_name(vni), "bridge": bridge_name(vni), "group": str(vxlan_group(vni)),
            "router_mac": router_mac(vni), "mtu": mtu,
            "router_link_local": str(link_local_address(router_mac(vni))),
            "dns_servers": net["dns_servers"], "dns_search": net["dns_search"],
        }
        write_json_file(os.path.join(network_dir(state_dir, vni), "network.json"), network_state)
        if apply_ruleset(state_dir):
            changes.append("applied nft rules")
        # The host routes to its own guests on this bridge (inbound traffic, NAT64 replies).
        run_command(["ip", "-6", "route", "replace", str(net["prefix"]), "dev", bridge_name(vni)])
        ensure_underlay_routes(net["routes"], net["underlay_device"], changes)
        config = render_radvd_config(bridge_name(vni), net["prefix"], mtu, net["dns_servers"],
                                     net["dns_search"], net["default_router"])
        radvd_pid = ensure_radvd(state_dir, vni, config, changes)
    return {**network_state, "radvd_pid": radvd_pid, "changes": changes}


def bridge_guest_ports(vni):
    bridge = bridge_name(vni)
    ports = ip_json("link", "show", "master", bridge) or []
    return sorted(port["ifname"] for port in ports if port["ifname"] != vxlan_name(vni))


def verb_net_down(spec):
    check_fields(spec, ["state_dir", "vni"], ["force"])
    state_dir = check_state_dir(spec["state_dir"])
    vni = check_vni(spec["vni"])
    force = check_bool(spec.get("force", False), "force")
    require_binaries("ip", "nft")
    with host_lock(state_dir):
        changes = []
        guest_ports = bridge_guest_ports(vni) if link_info(bridge_name(vni)) else []
        if guest_ports and not force:
            raise HostsideError("in_use", f"guest ports still on {bridge_name(vni)}: "
                                f"{', '.join(guest_ports)} (pass force: true to detach them)",
                                details={"ports": guest_ports})
        radvd_pid = running_radvd(state_dir, vni)
        if radvd_pid is not None:
            stop_process(radvd_pid)
            changes.append("stopped radvd")
        for name in (bridge_name(vni), vxlan_name(vni)):
            if link_info(name) is not None:
                run_command(["ip", "link", "del", "dev", name])
                changes.append(f"deleted {name}")
        if os.path.isdir(network_dir(state_dir, vni)):
            shutil.rmtree(network_dir(state_dir, vni))
            changes.append("removed network files")
        if apply_ruleset(state_dir):
            changes.append("applied nft rules")
    return {"vni": vni, "detached_ports": guest_ports, "changes": changes}


# ---------------------------------------------------------------------------------------------
# QMP
# ---------------------------------------------------------------------------------------------

def qmp_read_reply(reader):
    while True:
        line = reader.readline()
        if not line:
            raise HostsideError("qmp_failed", "QMP connection closed")
        message = json.loads(line)
        if "return" in message or "error" in message:
            return message
        # Events ({"event": ...}) and the greeting are not replies.


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


# ---------------------------------------------------------------------------------------------
# vm-up / vm-down / vm-status
# ---------------------------------------------------------------------------------------------

def vm_paths(state_dir, vm_uuid):
    directory = vm_dir(state_dir, vm_uuid)
    return {"dir": directory,
            "spec": os.path.join(directory, "spec.json"),
            "qmp": os.path.join(directory, "qmp.sock"),
            "vnc": os.path.join(directory, "vnc.sock"),
            "pid": os.path.join(directory, "qemu.pid"),
            "serial": os.path.join(directory, "serial.log")}


def running_qemu(state_dir, vm_uuid):
    paths = vm_paths(state_dir, vm_uuid)
    return owned_process(paths["pid"], paths["qmp"])


def parse_disk(disk, index, state_dir):
    field = f"disks[{index}]"
    if isinstance(disk, dict) and "rbd" in disk:
        return parse_rbd_disk(disk, field, state_dir)  # images section: a Ceph RBD disk
    check_fields(disk, ["path", "format"], ["readonly"])
    if disk["format"] not in ("qcow2", "raw"):
        raise bad_spec(f"{field}.format must be qcow2 or raw")
    return {"path": check_path_under(disk["path"], f"{field}.path", state_dir),
            "format": disk["format"],
            "readonly": check_bool(disk.get("readonly", False), f"{field}.readonly")}


def load_network_state(state_dir, vni):
    return read_json_file(os.path.join(network_dir(state_dir, vni), "network.json"))


def parse_nic(nic, index, vm_uuid, state_dir):
    field = f"nics[{index}]"
    check_fields(nic, ["mac", "vni", "ipv6"], ["tap", "index", "ingress"])
    mac = check_mac(nic["mac"], f"{field}.mac")
    # The NIC's own index (its root port and device id) stays when others are detached.
    index = check_int(nic.get("index", index), f"{field}.index", 0, MAX_NICS - 1)
    vni = check_vni(nic["vni"], f"{field}.vni")
    address = check_ipv6_address(nic["ipv6"], f"{field}.ipv6")
    if int(address) & ((1 << 64) - 1) != eui64_interface_id(mac):
        raise bad_spec(f"{field}.ipv6 is not the EUI-64 address of {mac}")
    tap = nic.get("tap", derived_tap_name(vm_uuid, index))
    check_string(tap, f"{field}.tap", TAP_NAME_RE, "lowercase letters, digits and _, at most 15")
    if tap.startswith(RESERVED_INTERFACE_PREFIXES):
        raise bad_spec(f"{field}.tap must not start with {', '.join(RESERVED_INTERFACE_PREFIXES)}")
    network = load_network_state(state_dir, vni)
    if network is not None and address not in ipaddress.IPv6Network(network["prefix"]):
        raise bad_spec(f"{field}.ipv6 is not in the network's prefix {network['prefix']}")
    return {"mac": mac, "vni": vni, "ipv6": str(address), "tap": tap, "index": index,
            "link_local": str(link_local_address(mac)),
            "ingress": parse_ingress_rules(nic.get("ingress"), f"{field}.ingress")}


def parse_vm_up_spec(spec):
    check_fields(spec, ["state_dir", "uuid", "name", "cores", "memory_mib", "disks", "nics"],
                 ["kernel", "initrd", "cmdline", "accel"])
    state_dir = check_state_dir(spec["state_dir"])
    vm_uuid = check_uuid(spec["uuid"])
    disks = check_list(spec["disks"], "disks", 16)
    nics = check_list(spec["nics"], "nics", MAX_NICS)
    vm = {
        "state_dir": state_dir,
        "uuid": vm_uuid,
        "name": check_string(spec["name"], "name", VM_NAME_RE,
                             "letters, digits and ._- (at most 63, starting with a letter or digit)"),
        "cores": check_int(spec["cores"], "cores", 1, 256),
        "memory_mib": check_int(spec["memory_mib"], "memory_mib", 32, 4 * 1024 * 1024),
        "disks": [parse_disk(disk, index, state_dir) for index, disk in enumerate(disks)],
        "nics": [parse_nic(nic, index, vm_uuid, state_dir) for index, nic in enumerate(nics)],
        "kernel": None, "initrd": None, "cmdline": None,
        "accel": spec.get("accel", "auto"),
    }
    for field in ("kernel", "initrd"):
        if spec.get(field) is not None:
            vm[field] = check_path_under(spec[field], field, state_dir)
    if spec.get("cmdline") is not None:
        vm["cmdline"] = check_string(spec["cmdline"], "cmdline", CMDLINE_RE,
                                     "printable ASCII on one line, at most 4096 characters")
        if vm["kernel"] is None:
            raise bad_spec("cmdline needs kernel")
    if vm["initrd"] is not None and vm["kernel"] is None:
        raise bad_spec("initrd needs kernel")
    if vm["accel"] not in ("auto", "kvm", "tcg"):
        raise bad_spec("accel must be auto, kvm or tcg")
    taps = [nic["tap"] for nic in vm["nics"]]
    if len(set(taps)) != len(taps):
        raise bad_spec("two nics share a tap name")
    indexes = [nic["index"] for nic in vm["nics"]]
    if len(set(indexes)) != len(indexes):
        raise bad_spec("two nics share an index")
    return vm


def resolve_accel(requested, state_dir):
    if requested == "auto":
        return "kvm" if kvm_probe_cached(state_dir)["usable"] else "tcg"
    return requested


def qemu_argv(vm, accel):
    paths = vm_paths(vm["state_dir"], vm["uuid"])
    argv = [QEMU_BINARY,
            "-name", f"guest={vm['name']},debug-threads=on",
            "-uuid", vm["uuid"],
            "-machine", f"q35,accel={accel}",
            "-m", str(vm["memory_mib"]),
            "-smp", str(vm["cores"]),
            "-nodefaults", "-no-user-config",
            "-device", "VGA",
            "-display", "none",
            "-vnc", f"unix:{paths['vnc']}",
            "-qmp", f"unix:{paths['qmp']},server=on,wait=off",
            "-serial", f"file:{paths['serial']}",
            "-pidfile", paths["pid"],
            "-daemonize"]
    if accel == "kvm":
        argv += ["-cpu", "host"]
    for index, disk in enumerate(vm["disks"]):
        readonly = ",readonly=on" if disk["readonly"] else ""
        argv += ["-drive", f"file={disk['path']},format={disk['format']},if=virtio,"
                           f"id=disk{index}{readonly}"]
    argv += hotplug_port_argv()
    for nic in vm["nics"]:
        argv += ["-netdev", netdev_option(nic), "-device", nic_device_option(nic)]
    if vm["kernel"]:
        argv += ["-kernel", vm["kernel"]]
    if vm["initrd"]:
        argv += ["-initrd", vm["initrd"]]
    if vm["cmdline"]:
        argv += ["-append", vm["cmdline"]]
    return argv


def nic_port_id(index):
    return f"nicport{index}"


def disk_port_id(slot):
    return f"diskport{slot}"


def hotplug_port_argv():
    """The root ports: nicport0..7 (chassis 1..8) and diskport0..7 (chassis 9..16). No I/O port
    window (io-reserve=0): virtio uses memory BARs, and 16 windows of 4 KiB would exhaust I/O space."""
    argv = []
    ports = [nic_port_id(index) for index in range(MAX_NICS)]
    ports += [disk_port_id(slot) for slot in range(MAX_HOTPLUG_DISKS)]
    for chassis, port in enumerate(ports, start=1):
        argv += ["-device", f"pcie-root-port,id={port},chassis={chassis},io-reserve=0"]
    return argv


def netdev_option(nic):
    return f"tap,id=net{nic['index']},ifname={nic['tap']},script=no,downscript=no"


def nic_device_option(nic):
    # romfile= with nothing: no iPXE, so nothing but the guest's own OS talks.
    return (f"virtio-net-pci,id=nic{nic['index']},netdev=net{nic['index']},mac={nic['mac']},"
            f"romfile=,bus={nic_port_id(nic['index'])}")


def port_state_path(state_dir, tap):
    return os.path.join(ports_dir(state_dir), f"{tap}.json")


def record_ports(vm):
    state_dir = vm["state_dir"]
    ensure_directory(ports_dir(state_dir))
    for nic in vm["nics"]:
        existing = read_json_file(port_state_path(state_dir, nic["tap"]))
        if existing is not None and existing["vm_uuid"] != vm["uuid"]:
            raise HostsideError("in_use", f"tap {nic['tap']} belongs to VM {existing['vm_uuid']}")
        write_json_file(port_state_path(state_dir, nic["tap"]), {
            "tap": nic["tap"], "vm_uuid": vm["uuid"], "mac": nic["mac"], "vni": nic["vni"],
            "ipv6": nic["ipv6"], "link_local": nic["link_local"], "index": nic["index"],
            "security_group_ingress": nic["ingress"],
        })


def sysfs_link(name):
    """What vm-up needs to know about a link, read from /sys (no process to start), or None.
    /sys/class/net shows the network namespace this program runs in (ip netns exec remounts it)."""
    base = f"/sys/class/net/{name}"
    mtu, flags = read_text(f"{base}/mtu"), read_text(f"{base}/flags")
    if mtu is None or flags is None:
        return None
    mtu, flags = int(mtu), int(flags, 16)
    master = os.path.realpath(f"{base}/master") if os.path.lexists(f"{base}/master") else None
    return {"is_tap": os.path.exists(f"{base}/tun_flags"), "mtu": mtu, "up": bool(flags & 0x1),
            "master": os.path.basename(master) if master else None}


def ensure_taps(nics, changes):
    """Each NIC's tap on its bridge with the bridge's MTU, up, with no IPv6 of its own.
    Costs at most two `ip` runs for any number of NICs: one to create taps, one batch for the rest."""
    missing = []
    for nic in nics:
        link = sysfs_link(nic["tap"])
        if link is not None and not link["is_tap"]:
            raise HostsideError("in_use", f"{nic['tap']} exists and is not a tap device")
        if link is None:
            missing.append(nic["tap"])
    if missing:
        run_command(["ip", "-batch", "-"], input_text="".join(
            f"tuntap add dev {tap} mode tap\n" for tap in missing))
        changes.extend(f"created {tap}" for tap in missing)
    batch = []
    for nic in nics:
        tap, bridge = nic["tap"], bridge_name(nic["vni"])
        # The host itself has nothing to say on a guest's port (before it goes up: no link-local).
        write_interface_sysctl(tap, "disable_ipv6", 1)
        link, bridge_link = sysfs_link(tap), sysfs_link(bridge)
        if link["master"] != bridge:
            batch.append(f"link set dev {tap} master {bridge}")
            changes.append(f"attached {tap} to {bridge}")
        if link["mtu"] != bridge_link["mtu"]:
            batch.append(f"link set dev {tap} mtu {bridge_link['mtu']}")
        if not link["up"]:
            batch.append(f"link set dev {tap} up")
    if batch:
        # Tap and bridge names are checked against TAP_NAME_RE / bridge_name(): no spaces, no
        # quotes, so each batch line has exactly the words written here.
        run_command(["ip", "-batch", "-"], input_text="\n".join(batch) + "\n")


def require_networks_up(vm):
    for nic in vm["nics"]:
        if load_network_state(vm["state_dir"], nic["vni"]) is None or \
                sysfs_link(bridge_name(nic["vni"])) is None:
            raise HostsideError("not_found", f"network vni {nic['vni']} is not up on this host "
                                "(run net-up first)")


def tail_of_file(path, max_bytes=4000):
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - max_bytes))
            return handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def launch_qemu_paused(vm, accel):
    """Start qemu with its CPUs stopped (-S) and return without waiting: it initialises while the
    caller applies the guest's nft rules. The guest runs no instruction before `cont`."""
    paths = vm_paths(vm["state_dir"], vm["uuid"])
    for stale in (paths["qmp"], paths["vnc"], paths["pid"]):
        remove_file(stale)
    argv = [*qemu_argv(vm, accel), "-S"]
    binary = find_binary(argv[0])
    if binary is None:
        raise HostsideError("missing_binary", f"not installed on this host: {argv[0]}",
                            argv=argv, details={"missing": [argv[0]]})
    process = subprocess.Popen([binary, *argv[1:]], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return argv, process


def await_qemu(vm, argv, process):
    """Wait until qemu -daemonize has initialised (its parent exits) and return the guest's pid."""
    paths = vm_paths(vm["state_dir"], vm["uuid"])
    try:
        stdout, stderr = process.communicate(timeout=QEMU_START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise HostsideError("timeout", f"qemu did not start within {QEMU_START_TIMEOUT_S} s",
                            stderr=stderr, argv=argv) from None
    if process.returncode != 0:
        output = stderr + stdout
        code = "disk_full" if looks_like_disk_full(output) else "qemu_failed"
        # qemu's own words lead the message: they are what a person needs (the command line and
        # the rest of stderr follow in the error's details).
        said = qemu_error_lines(output)[:1]
        message = said[0] if said else f"qemu exited with status {process.returncode}"
        raise HostsideError(code, f"qemu failed to start: {message}", stderr=output,
                            argv=argv, details={"serial_tail": tail_of_file(paths["serial"])})
    pid = running_qemu(vm["state_dir"], vm["uuid"])
    if pid is None:
        raise HostsideError("qemu_failed", "qemu exited right after starting", stderr=stderr,
                            argv=argv, details={"serial_tail": tail_of_file(paths["serial"])})
    return pid


def start_guarded_qemu(vm, accel, changes):
    """qemu and the nft rules in parallel; the guest starts only once its rules are in place.
    Returns (argv, process) once the rules are in: the caller awaits qemu (await_qemu)."""
    argv, process = launch_qemu_paused(vm, accel)
    try:
        if apply_ruleset(vm["state_dir"]):
            changes.append("applied nft rules")
    except BaseException:
        with contextlib.suppress(HostsideError):
            stop_process(await_qemu(vm, argv, process))
        raise
    return argv, process


def continue_guest(vm):
    """Let a guest that waits in prelaunch (started with -S) run; answer its QMP status."""
    paths = vm_paths(vm["state_dir"], vm["uuid"])
    status, qmp_error = qmp_status(paths["qmp"])
    if status == "prelaunch":
        try:
            # One connection for both: each QMP connection is a greeting and a handshake.
            status = qmp_run(paths["qmp"], [("cont", None), ("query-status", None)])["status"]
        except HostsideError as error:
            return status, error.message
    return status, qmp_error


def spec_for_disk(vm, accel):
    return {key: vm[key] for key in ("uuid", "name", "cores", "memory_mib", "disks", "nics",
                                     "kernel", "initrd", "cmdline")} | {"accel": accel}


def remove_ports_of_failed_start(vm):
    """After qemu failed to start (or its rules were refused): the VM's taps and port files go
    again, so no tap of a guest that never ran stays on a bridge. Called under the host lock, and
    only when this vm-up found no qemu of the VM running (a running guest's taps are never
    touched). Best effort: the start's own error is what the caller reports."""
    if running_qemu(vm["state_dir"], vm["uuid"]) is not None:
        return
    with contextlib.suppress(HostsideError, OSError):
        for nic in vm["nics"]:
            remove_port(vm["state_dir"], nic["tap"], [])
        apply_ruleset(vm["state_dir"])


def verb_vm_up(spec):
    vm = parse_vm_up_spec(spec)
    require_binaries("ip", "nft", QEMU_BINARY)
    state_dir, vm_uuid = vm["state_dir"], vm["uuid"]
    paths = vm_paths(state_dir, vm_uuid)
    changes = []
    ensure_directory(paths["dir"])
    # The VM's own lock covers "no qemu runs" until its pid file exists, so two vm-ups never
    # start two; the host lock covers only ports, taps and rules, and the host's other verbs go
    # on while this qemu initialises.
    with file_lock(os.path.join(paths["dir"], "vm-up.lock"), f"another vm-up of {vm_uuid} runs"):
        with host_lock(state_dir):
            require_networks_up(vm)
            pid = running_qemu(state_dir, vm_uuid)
            accel = resolve_accel(vm["accel"], state_dir)
            already_running = pid is not None
            if not already_running:
                write_json_file(paths["spec"], spec_for_disk(vm, accel))
            # Port files, taps, then qemu paused while the rules go in; `cont` only after both, so
            # the guest's first frame already meets its guard.
            record_ports(vm)
            ensure_taps(vm["nics"], changes)
            if already_running:
                if apply_ruleset(state_dir):
                    changes.append("applied nft rules")
            else:
                try:
                    starting = start_guarded_qemu(vm, accel, changes)
                except BaseException:
                    remove_ports_of_failed_start(vm)
                    raise
        if not already_running:
            try:
                pid = await_qemu(vm, *starting)
            except BaseException:
                with host_lock(state_dir):
                    remove_ports_of_failed_start(vm)
                raise
            changes.append("started qemu")
        status, qmp_error = continue_guest(vm)
    recorded = read_json_file(paths["spec"]) or {}
    return {"uuid": vm_uuid, "name": vm["name"], "pid": pid, "status": status,
            "qmp_error": qmp_error, "already_running": already_running,
            "accel": recorded.get("accel", accel),
            "taps": [nic["tap"] for nic in vm["nics"]], "qmp_socket": paths["qmp"],
            "vnc_socket": paths["vnc"], "serial_log": paths["serial"], "changes": changes}


def remove_port(state_dir, tap, changes):
    """A guest port's tap and its port file (its rules go with the next apply_ruleset)."""
    link = sysfs_link(tap)
    if link is not None and link["is_tap"]:
        run_command(["ip", "link", "del", "dev", tap])
        changes.append(f"deleted {tap}")
    if os.path.exists(port_state_path(state_dir, tap)):
        remove_file(port_state_path(state_dir, tap))
        changes.append(f"removed port {tap}")


def vm_taps(state_dir, vm_uuid):
    """Taps of a VM: from its port files, and from its recorded spec in case a port file is gone."""
    taps = {port["tap"] for port in load_port_states(state_dir) if port["vm_uuid"] == vm_uuid}
    recorded = read_json_file(vm_paths(state_dir, vm_uuid)["spec"]) or {}
    taps.update(nic["tap"] for nic in recorded.get("nics", []))
    return sorted(taps)


def shut_down_qemu(state_dir, vm_uuid, timeout_s, hard, discard=False):
    """discard: the VM's disks are deleted next, so there is nothing for qemu to flush on a
    SIGTERM: a hard stop is SIGKILL at once."""
    paths = vm_paths(state_dir, vm_uuid)
    pid = running_qemu(state_dir, vm_uuid)
    if pid is None:
        return "already_stopped"
    if not hard:
        with contextlib.suppress(HostsideError):
            qmp_execute(paths["qmp"], "system_powerdown")
        if wait_for_exit(pid, timeout_s):
            return "powerdown"
    if discard:
        send_signal(pid, signal.SIGKILL)
        wait_for_exit(pid, 5)
    else:
        stop_process(pid)
    if process_is_alive(pid):
        raise HostsideError("timeout", f"qemu pid {pid} did not die")
    return "killed"


def verb_vm_down(spec):
    check_fields(spec, ["state_dir", "uuid"], ["timeout_s", "hard", "purge"])
    state_dir = check_state_dir(spec["state_dir"])
    vm_uuid = check_uuid(spec["uuid"])
    timeout_s = check_number(spec.get("timeout_s", 30), "timeout_s", 0, 600)
    hard = check_bool(spec.get("hard", False), "hard")
    purge = check_bool(spec.get("purge", False), "purge")
    require_binaries("ip", "nft")
    ensure_directory(state_dir)
    # Waiting for the guest happens outside the host lock so other verbs are not held up.
    stopped_by = shut_down_qemu(state_dir, vm_uuid, timeout_s, hard, discard=purge)
    changes = []
    with host_lock(state_dir):
        for tap in vm_taps(state_dir, vm_uuid):
            remove_port(state_dir, tap, changes)
        if apply_ruleset(state_dir):
            changes.append("applied nft rules")
        paths = vm_paths(state_dir, vm_uuid)
        for runtime_file in (paths["qmp"], paths["vnc"], paths["pid"]):
            if os.path.exists(runtime_file):
                remove_file(runtime_file)
                changes.append(f"removed {os.path.basename(runtime_file)}")
        if purge and os.path.isdir(paths["dir"]):
            # The VM is deleted: its spec and serial log go too, so inventory forgets it.
            shutil.rmtree(paths["dir"])
            changes.append("removed the VM directory")
    return {"uuid": vm_uuid, "stopped_by": stopped_by, "changes": changes}


def vm_status(state_dir, vm_uuid):
    paths = vm_paths(state_dir, vm_uuid)
    pid = running_qemu(state_dir, vm_uuid)
    if pid is None:
        return {"uuid": vm_uuid, "status": "stopped", "pid": None, "qmp_error": None}
    status, qmp_error = qmp_status(paths["qmp"])
    return {"uuid": vm_uuid, "status": status, "pid": pid, "qmp_error": qmp_error}


def verb_vm_status(spec):
    check_fields(spec, ["state_dir", "uuid"])
    state_dir = check_state_dir(spec["state_dir"])
    vm_uuid = check_uuid(spec["uuid"])
    recorded = read_json_file(vm_paths(state_dir, vm_uuid)["spec"]) or {}
    return {**vm_status(state_dir, vm_uuid), "name": recorded.get("name"),
            "known": bool(recorded)}


def verb_vm_reboot(spec):
    """QMP system_reset: a hard reset, like the reset button (an OS that ignores ACPI still
    reboots). A VM that is not running is `not_found`: rebooting it would be starting it."""
    check_fields(spec, ["state_dir", "uuid"])
    state_dir = check_state_dir(spec["state_dir"])
    vm_uuid = check_uuid(spec["uuid"])
    paths = vm_paths(state_dir, vm_uuid)
    pid = running_qemu(state_dir, vm_uuid)
    if pid is None:
        raise HostsideError("not_found", f"VM {vm_uuid} is not running on this host")
    qmp_execute(paths["qmp"], "system_reset")
    status, qmp_error = continue_guest({"state_dir": state_dir, "uuid": vm_uuid})
    return {"uuid": vm_uuid, "pid": pid, "status": status, "qmp_error": qmp_error}


# ---------------------------------------------------------------------------------------------
# vm-firewall / nic-attach / nic-detach: a running guest's ports change without a restart
# ---------------------------------------------------------------------------------------------

def verb_vm_firewall(spec):
    """Replace the ingress rules of every port of a VM; the whole table swaps in one nft
    transaction, so no packet ever sees half a rule set. A VM with no ports here gets its rules
    with its next vm-up (the spec carries them)."""
    check_fields(spec, ["state_dir", "uuid", "ingress"])
    state_dir = check_state_dir(spec["state_dir"])
    vm_uuid = check_uuid(spec["uuid"])
    rules = parse_ingress_rules(spec["ingress"], "ingress")
    require_binaries("nft")
    with host_lock(state_dir):
        ports = [port for port in load_port_states(state_dir) if port["vm_uuid"] == vm_uuid]
        for port in ports:
            port["security_group_ingress"] = rules
            write_json_file(port_state_path(state_dir, port["tap"]), port)
        applied = apply_ruleset(state_dir)
    return {"uuid": vm_uuid, "ports": [port["tap"] for port in ports], "rules": len(rules),
            "applied": applied}


def peripheral_ids(qmp_socket):
    return {item["name"] for item in qmp_execute(qmp_socket, "qom-list", {"path": "/machine/peripheral"})}


def remember_nic(state_dir, vm_uuid, nic, present):
    """Keep the VM's recorded spec in line with its plugged NICs (vm-down and inventory read it)."""
    path = vm_paths(state_dir, vm_uuid)["spec"]
    recorded = read_json_file(path)
    if recorded is None:
        return
    nics = [known for known in recorded.get("nics", []) if known.get("index") != nic["index"]
            and known.get("tap") != nic["tap"]]
    if present:
        nics.append({key: nic[key] for key in ("mac", "vni", "ipv6", "tap", "index", "link_local")})
    recorded["nics"] = sorted(nics, key=lambda known: known.get("index", 0))
    write_json_file(path, recorded)


def parse_nic_change_spec(spec, required):
    check_fields(spec, ["state_dir", "uuid", *required], ["timeout_s"])
    state_dir = check_state_dir(spec["state_dir"])
    vm_uuid = check_uuid(spec["uuid"])
    timeout_s = check_number(spec.get("timeout_s", 30), "timeout_s", 1, 600)
    return state_dir, vm_uuid, timeout_s


def verb_nic_attach(spec):
    state_dir, vm_uuid, _ = parse_nic_change_spec(spec, ["nic"])
    if not isinstance(spec["nic"], dict) or "index" not in spec["nic"]:
        raise bad_spec("nic must be an object with an index")
    nic = parse_nic(spec["nic"], spec["nic"]["index"], vm_uuid, state_dir)
    vm = {"state_dir": state_dir, "uuid": vm_uuid, "nics": [nic]}
    require_binaries("ip", "nft")
    qmp_socket = vm_paths(state_dir, vm_uuid)["qmp"]
    with host_lock(state_dir):
        if running_qemu(state_dir, vm_uuid) is None:
            raise HostsideError("not_found", f"VM {vm_uuid} is not running on this host")
        require_networks_up(vm)
        changes = []
        # The port's guard is in place before the guest sees the device.
        record_ports(vm)
        ensure_taps([nic], changes)
        if apply_ruleset(state_dir):
            changes.append("applied nft rules")
        device_id = f"nic{nic['index']}"
        if device_id not in peripheral_ids(qmp_socket):
            commands = [("netdev_add", {"type": "tap", "id": f"net{nic['index']}", "ifname": nic["tap"],
                                        "script": "no", "downscript": "no"}),
                        ("device_add", {"driver": "virtio-net-pci", "id": device_id,
                                        "netdev": f"net{nic['index']}", "mac": nic["mac"], "romfile": "",
                                        "bus": nic_port_id(nic["index"])})]
            try:
                qmp_run(qmp_socket, commands)
            except HostsideError as error:
                if "Duplicate" not in error.message:
                    raise
                # A netdev left by an earlier try that died before device_add: plug the device.
                qmp_run(qmp_socket, commands[1:])
            changes.append(f"plugged {device_id}")
        remember_nic(state_dir, vm_uuid, nic, present=True)
    return {"uuid": vm_uuid, "tap": nic["tap"], "device": device_id, "changes": changes}


def verb_nic_detach(spec):
    state_dir, vm_uuid, timeout_s = parse_nic_change_spec(spec, ["index"])
    index = check_int(spec["index"], "index", 0, MAX_NICS - 1)
    tap = derived_tap_name(vm_uuid, index)
    require_binaries("ip", "nft")
    qmp_socket = vm_paths(state_dir, vm_uuid)["qmp"]
    changes = []
    # The guest's answer takes seconds: wait outside the host lock.
    if running_qemu(state_dir, vm_uuid) is not None:
        if qmp_unplug_device(qmp_socket, f"nic{index}", timeout_s) == "removed":
            changes.append(f"unplugged nic{index}")
        with contextlib.suppress(HostsideError):  # gone with its device, or never there
            qmp_execute(qmp_socket, "netdev_del", {"id": f"net{index}"})
    with host_lock(state_dir):
        remove_port(state_dir, tap, changes)
        if apply_ruleset(state_dir):
            changes.append("applied nft rules")
        remember_nic(state_dir, vm_uuid, {"index": index, "tap": tap}, present=False)
    return {"uuid": vm_uuid, "tap": tap, "changes": changes}


# ---------------------------------------------------------------------------------------------
# nat64-sync: public IPv4 addresses mapped 1:1 onto guests' IPv6 addresses (tayga)
# ---------------------------------------------------------------------------------------------

def nat64_dir(state_dir):
    return os.path.join(state_dir, "nat64")


def parse_nat64_pool(pool, field):
    check_fields(pool, ["id", "prefix", "nat64_prefix", "translator_address", "maps"])
    pool_id = check_int(pool["id"], f"{field}.id", 1, 10**9)
    try:
        prefix = ipaddress.IPv4Network(pool["prefix"], strict=True) if isinstance(pool["prefix"], str) else None
        nat64_prefix = ipaddress.IPv6Network(pool["nat64_prefix"], strict=True) \
            if isinstance(pool["nat64_prefix"], str) else None
        translator = ipaddress.IPv4Address(pool["translator_address"]) \
            if isinstance(pool["translator_address"], str) else None
    except ValueError:
        prefix = nat64_prefix = translator = None
    if prefix is None or nat64_prefix is None or nat64_prefix.prefixlen != 96 or translator is None:
        raise bad_spec(f"{field}: prefix must be an IPv4 network, nat64_prefix an IPv6 /96 and "
                       "translator_address an IPv4 address")
    if translator in prefix:
        raise bad_spec(f"{field}.translator_address must lie outside the pool")
    maps = []
    for index, entry in enumerate(check_list(pool["maps"], f"{field}.maps", 65536)):
        where = f"{field}.maps[{index}]"
        check_fields(entry, ["ipv4", "ipv6"], ["via"])
        try:
            ipv4 = ipaddress.IPv4Address(entry["ipv4"]) if isinstance(entry["ipv4"], str) else None
        except ValueError:
            ipv4 = None
        if ipv4 is None or ipv4 not in prefix:
            raise bad_spec(f"{where}.ipv4 must be an address of {prefix}")
        ipv6 = check_ipv6_address(entry["ipv6"], f"{where}.ipv6")
        via = None if entry.get("via") is None else str(check_ipv6_address(entry["via"], f"{where}.via"))
        maps.append({"ipv4": str(ipv4), "ipv6": str(ipv6), "via": via})
    for key in ("ipv4", "ipv6"):
        values = [entry[key] for entry in maps]
        if len(set(values)) != len(values):
            raise bad_spec(f"{field}.maps: an {key} address appears twice")
    return {"id": pool_id, "prefix": str(prefix), "nat64_prefix": str(nat64_prefix),
            "translator_address": str(translator), "maps": maps, "tun": f"nat64p{pool_id}"}


def nat64_paths(state_dir, pool_id):
    directory = os.path.join(nat64_dir(state_dir), str(pool_id))
    return {"dir": directory, "config": os.path.join(directory, "tayga.conf"),
            "pid": os.path.join(directory, "tayga.pid"), "state": os.path.join(directory, "state.json")}


def render_tayga_config(pool):
    lines = [f"tun-device {pool['tun']}", f"ipv4-addr {pool['translator_address']}",
             f"prefix {pool['nat64_prefix']}"]
    lines += [f"map {entry['ipv4']} {entry['ipv6']}" for entry in pool["maps"]]
    return "\n".join(lines) + "\n"


def host_routes_of(maps):
    """/128 routes for mapped guests on other hosts; a guest here is reached on its bridge."""
    return sorted((entry["ipv6"], entry["via"]) for entry in maps if entry["via"])


def stop_translator(state_dir, pool_id, changes):
    paths = nat64_paths(state_dir, pool_id)
    pid = owned_process(paths["pid"], paths["config"])
    if pid is not None:
        stop_process(pid)
        changes.append(f"stopped tayga of pool {pool_id}")
    remove_file(paths["pid"])


def remove_nat64_pool(state_dir, pool_id, underlay_device, changes):
    paths = nat64_paths(state_dir, pool_id)
    stop_translator(state_dir, pool_id, changes)
    recorded = read_json_file(paths["state"]) or {}
    for address, _ in recorded.get("host_routes", []):
        run_command(["ip", "-6", "route", "del", f"{address}/128", "dev", underlay_device], check=False)
    tun = f"nat64p{pool_id}"
    if link_info(tun) is not None:
        run_command(["ip", "link", "del", "dev", tun])
        changes.append(f"deleted {tun}")
    shutil.rmtree(paths["dir"], ignore_errors=True)


def sync_nat64_pool(state_dir, pool, underlay_device, changes):
    paths = nat64_paths(state_dir, pool["id"])
    ensure_directory(paths["dir"])
    config = render_tayga_config(pool)
    running = owned_process(paths["pid"], paths["config"])
    if running is None or read_text(paths["config"]) != config or link_info(pool["tun"]) is None:
        # tayga reads its maps only at start: a changed map restarts it (a few milliseconds in
        # which this pool's translated traffic is dropped; TCP retransmits).
        stop_translator(state_dir, pool["id"], changes)
        write_file_atomically(paths["config"], config)
        if link_info(pool["tun"]) is None:
            run_command(["tayga", "-c", paths["config"], "--mktun"])
            changes.append(f"created {pool['tun']}")
        run_command(["ip", "link", "set", "dev", pool["tun"], "up"])
        run_command(["tayga", "-c", paths["config"], "-p", paths["pid"]])
        deadline = time.monotonic() + 5
        while owned_process(paths["pid"], paths["config"]) is None:
            if time.monotonic() > deadline:
                raise HostsideError("command_failed", "tayga did not stay up",
                                    argv=["tayga", "-c", paths["config"]])
            time.sleep(0.02)
        changes.append(f"started tayga of pool {pool['id']} with {len(pool['maps'])} maps")
    run_command(["ip", "route", "replace", pool["prefix"], "dev", pool["tun"]])
    run_command(["ip", "-6", "route", "replace", pool["nat64_prefix"], "dev", pool["tun"]])
    recorded = read_json_file(paths["state"]) or {}
    wanted = host_routes_of(pool["maps"])
    for address, via in wanted:
        run_command(["ip", "-6", "route", "replace", f"{address}/128", "via", via, "dev", underlay_device])
    for address, _ in recorded.get("host_routes", []):
        if address not in {route[0] for route in wanted}:
            run_command(["ip", "-6", "route", "del", f"{address}/128", "dev", underlay_device], check=False)
            changes.append(f"removed route {address}")
    write_json_file(paths["state"], {"host_routes": wanted, "maps": pool["maps"]})


def verb_nat64_sync(spec):
    """Make this host's translators exactly the given pools and maps (the whole desired state:
    a pool left out is torn down). Run on the pool's designated NAT64 host."""
    check_fields(spec, ["state_dir", "underlay_device", "pools"])
    state_dir = check_state_dir(spec["state_dir"])
    underlay_device = check_interface_name(spec["underlay_device"], "underlay_device")
    pools = [parse_nat64_pool(pool, f"pools[{index}]")
             for index, pool in enumerate(check_list(spec["pools"], "pools", 64))]
    require_binaries("ip", "tayga")
    changes = []
    with host_lock(state_dir):
        for key in ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"):
            if read_text(key).strip() != "1":
                with open(key, "w") as handle:
                    handle.write("1\n")
        ensure_directory(nat64_dir(state_dir))
        wanted_ids = {pool["id"] for pool in pools}
        for name in sorted(os.listdir(nat64_dir(state_dir))):
            if name.isdigit() and int(name) not in wanted_ids:
                remove_nat64_pool(state_dir, int(name), underlay_device, changes)
        for pool in pools:
            sync_nat64_pool(state_dir, pool, underlay_device, changes)
    return {"pools": [{"id": pool["id"], "tun": pool["tun"], "maps": len(pool["maps"])} for pool in pools],
            "changes": changes}


# ---------------------------------------------------------------------------------------------
# inventory
# ---------------------------------------------------------------------------------------------

def inventory_vms(state_dir):
    directory = vms_dir(state_dir)
    if not os.path.isdir(directory):
        return []
    vms = []
    for entry in sorted(os.listdir(directory)):
        recorded = read_json_file(os.path.join(directory, entry, "spec.json"))
        if recorded is None:
            continue
        vms.append({**vm_status(state_dir, entry), "name": recorded.get("name"),
                    "taps": sorted(nic["tap"] for nic in recorded.get("nics", []))})
    return vms


def inventory_links():
    links = ip_json("link", "show") or []
    taps, bridges, vxlans = [], [], []
    for link in links:
        kind, name = link_kind(link), link["ifname"]
        summary = {"name": name, "master": link.get("master"), "up": "UP" in link.get("flags", []),
                   "mtu": link.get("mtu")}
        if kind == "tun":
            taps.append(summary)
        elif kind == "bridge" and re.fullmatch(r"br\d+", name):
            bridges.append({**summary, "address": link.get("address")})
        elif kind == "vxlan" and re.fullmatch(r"vxlan\d+", name):
            data = link["linkinfo"].get("info_data", {})
            vxlans.append({**summary, "vni": data.get("id"), "group": data.get("group6"),
                           "underlay_device": data.get("link")})
    by_name = lambda item: item["name"]  # noqa: E731
    return sorted(taps, key=by_name), sorted(bridges, key=by_name), sorted(vxlans, key=by_name)


def inventory_networks(state_dir):
    networks = []
    for network in load_network_states(state_dir):
        pid = running_radvd(state_dir, network["vni"])
        networks.append({"vni": network["vni"], "prefix": network["prefix"],
                         "bridge": network["bridge"], "vxlan": network["vxlan"],
                         "radvd_pid": pid})
    return networks


def processes_under_state_dir(state_dir):
    """(pid, argv) of live processes whose command line names a path below state_dir."""
    marker = state_dir + "/"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = process_cmdline(int(entry))
        if argv and any(marker in argument for argument in argv) and process_is_alive(int(entry)):
            found.append((int(entry), argv))
    return sorted(found)


def unknown_processes(state_dir, known_pids):
    unknown_qemu, unknown_radvd = [], []
    vm_path_re = re.compile(re.escape(vms_dir(state_dir)) + r"/([^/,]+)/")
    for pid, argv in processes_under_state_dir(state_dir):
        # radvd forks a privilege-separated helper with the same command line.
        if pid in known_pids or parent_pid(pid) in known_pids:
            continue
        program = os.path.basename(argv[0])
        if program.startswith("qemu-system"):
            match = next((vm_path_re.search(arg) for arg in argv if vm_path_re.search(arg)), None)
            unknown_qemu.append({"pid": pid, "vm_dir_name": match.group(1) if match else None})
        elif program == "radvd":
            unknown_radvd.append({"pid": pid})
    return unknown_qemu, unknown_radvd


def verb_inventory(spec):
    check_fields(spec, ["state_dir"])
    state_dir = check_state_dir(spec["state_dir"])
    require_binaries("ip", "nft")
    vms = inventory_vms(state_dir)
    networks = inventory_networks(state_dir)
    taps, bridges, vxlans = inventory_links()
    known_pids = {vm["pid"] for vm in vms if vm["pid"]} | \
                 {network["radvd_pid"] for network in networks if network["radvd_pid"]}
    unknown_qemu, unknown_radvd = unknown_processes(state_dir, known_pids)
    chains = nft_table_chains()
    return {
        "vms": vms,
        "networks": networks,
        "taps": taps,
        "bridges": bridges,
        "vxlans": vxlans,
        "ruleset": {"table": f"{NFT_FAMILY} {NFT_TABLE}", "present": chains is not None,
                    "chains": chains or [],
                    "guarded_ports": sorted(port["tap"] for port in load_port_states(state_dir))},
        "unknown_qemu": unknown_qemu,
        "unknown_radvd": unknown_radvd,
    }


# ---------------------------------------------------------------------------------------------
# Images, disks, config drives and the metadata service (the images app's verbs)
#
#   <state_dir>/images/<sha256>.qcow2            base images, verified by checksum, read-only
#   <state_dir>/images/incoming/<sha256>-<token>.part   uploads of the control plane in progress
#   <state_dir>/disks/<disk uuid>.qcow2 (+ .json)   VM disks: an overlay of a base, or blank
#   <state_dir>/snapshots/<snapshot uuid>.qcow2  standalone (flattened) copies of a disk
#   <state_dir>/metadata/<vm uuid>/              metadata.json, cidata.iso (NoCloud config drive)
#   <state_dir>/metadata/server.*                the metadata HTTP service (pid, spec, log, state)
# ---------------------------------------------------------------------------------------------

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
UPLOAD_TOKEN_RE = re.compile(r"^[0-9a-f]{8,32}$")
SSH_PUBLIC_KEY_RE = re.compile(r"^(ssh|ecdsa|sk)-[A-Za-z0-9@.-]+ [A-Za-z0-9+/]+={0,3}( [\x20-\x7e]*)?$")
KEY_NAME_RE = re.compile(r"^[\x20-\x7e]{1,100}$")
RBD_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_USER_DATA_BYTES = 65536
MAX_DISK_MIB = 64 * 1024 * 1024  # 64 TiB
IMAGE_COMMAND_TIMEOUT_S = 3600  # copying or checksumming a large image takes a while
# The metadata service listens on this link-local address on every network bridge of the host
# (the address OpenStack and cloud-init use for IPv6 metadata: fe80::a9fe:a9fe is 169.254.169.254).
METADATA_ADDRESS = "fe80::a9fe:a9fe"
METADATA_PORT = 80
METADATA_RESCAN_S = 1.0
METADATA_MAX_CLIENTS = 64
OPENSTACK_VERSIONS = ("2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30",
                      "2016-10-06", "2017-02-22", "2018-08-27", "latest")
EC2_VERSIONS = ("1.0", "2007-01-19", "2009-04-04", "latest")


def images_dir(state_dir):
    return os.path.join(state_dir, "images")


def base_image_path(state_dir, sha256):
    return os.path.join(images_dir(state_dir), f"{sha256}.qcow2")


def disks_dir(state_dir):
    return os.path.join(state_dir, "disks")


def disk_path(state_dir, disk_uuid):
    return os.path.join(disks_dir(state_dir), f"{disk_uuid}.qcow2")


def snapshot_path(state_dir, snapshot_uuid):
    return os.path.join(state_dir, "snapshots", f"{snapshot_uuid}.qcow2")


def metadata_dir(state_dir):
    return os.path.join(state_dir, "metadata")


def vm_metadata_dir(state_dir, vm_uuid):
    return os.path.join(metadata_dir(state_dir), vm_uuid)


def check_sha256(value, field="sha256"):
    return check_string(value, field, SHA256_RE, "64 lowercase hex digits")


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def qemu_img_info(path, image_format="qcow2"):
    # Always an explicit format: qemu-img must never guess what a file is.
    completed = run_command(["qemu-img", "info", "-f", image_format, "--output=json", path],
                            timeout=IMAGE_COMMAND_TIMEOUT_S)
    return json.loads(completed.stdout)


def refuse_external_references(info, what):
    """A qcow2 we did not make ourselves may name files elsewhere on this host: never use it."""
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise HostsideError("bad_image", f"{what} names a backing file: refused")
    data_file = (info.get("format-specific") or {}).get("data", {}).get("data-file")
    if data_file:
        raise HostsideError("bad_image", f"{what} names an external data file: refused")


def qemu_processes_using(state_dir, path):
    """pids of qemu processes of this host that have path open: on their command line, or
    plugged in later by disk-attach."""
    needle = f"file={path},"
    pids = [pid for pid, argv in processes_under_state_dir(state_dir)
            if os.path.basename(argv[0]).startswith("qemu-system") and any(needle in arg for arg in argv)]
    return sorted(set(pids + hot_disk_users(state_dir, path)))


def running_vm_drive(state_dir, path):
    """(qmp socket, block reference) of the running VM that has path open, or None. The reference
    names the drive as QMP's block commands take it: {"device": "disk<index>"} for a disk the VM
    started with, {"node-name": ...} for one plugged in later."""
    directory = vms_dir(state_dir)
    if not os.path.isdir(directory):
        return None
    for entry in sorted(os.listdir(directory)):
        recorded = read_json_file(os.path.join(directory, entry, "spec.json")) or {}
        for index, disk in enumerate(recorded.get("disks", [])):
            if disk.get("path") == path and running_qemu(state_dir, entry) is not None:
                hotplug = disk.get("hotplug")
                reference = {"node-name": hotplug["node"]} if hotplug else {"device": f"disk{index}"}
                return vm_paths(state_dir, entry)["qmp"], reference
    return None


def block_name(reference):
    """The one name drive-backup and block jobs take (a drive id or a node name)."""
    return reference.get("device") or reference["node-name"]


def block_virtual_size(qmp_socket, reference):
    for entry in qmp_execute(qmp_socket, "query-block"):
        inserted = entry.get("inserted") or {}
        if entry.get("device") == reference.get("device") or inserted.get("node-name") == reference.get("node-name"):
            return int(inserted["image"]["virtual-size"])
    raise HostsideError("not_found", f"no drive {block_name(reference)} in the running VM")


def verb_image_ensure(spec):
    """Make a base image present, verified by its sha256. Without a finished upload the answer
    says where to upload (present: false); call again with the same token after uploading."""
    check_fields(spec, ["state_dir", "sha256", "size_bytes"], ["upload_token"])
    state_dir = check_state_dir(spec["state_dir"])
    sha256 = check_sha256(spec["sha256"])
    size_bytes = check_int(spec["size_bytes"], "size_bytes", 1, MAX_DISK_MIB * 1024 * 1024)
    token = spec.get("upload_token")
    if token is not None:
        check_string(token, "upload_token", UPLOAD_TOKEN_RE, "8 to 32 lowercase hex digits")
    final = base_image_path(state_dir, sha256)
    incoming = os.path.join(images_dir(state_dir), "incoming")
    ensure_directory(incoming)
    changes = []
    if not os.path.isfile(final):
        if token is None:
            return {"present": False, "path": final, "upload_path": None, "changes": changes}
        upload = os.path.join(incoming, f"{sha256}-{token}.part")
        if not os.path.isfile(upload):
            return {"present": False, "path": final, "upload_path": upload, "changes": changes}
        require_binaries("qemu-img")
        actual_size = os.path.getsize(upload)
        actual_sha = file_sha256(upload)
        if actual_size != size_bytes or actual_sha != sha256:
            remove_file(upload)
            raise HostsideError("checksum_mismatch", f"the uploaded image has {actual_size} bytes and "
                                f"sha256 {actual_sha}, expected {size_bytes} bytes and {sha256}; removed")
        try:
            refuse_external_references(qemu_img_info(upload), "the uploaded image")
        except HostsideError:
            remove_file(upload)
            raise
        os.chmod(upload, 0o444)
        os.replace(upload, final)
        changes.append(f"imported {sha256}")
    elif os.path.getsize(final) != size_bytes:
        raise HostsideError("checksum_mismatch", f"{final} has {os.path.getsize(final)} bytes, expected "
                            f"{size_bytes}: remove it with image-delete")
    return {"present": True, "path": final, "upload_path": None, "changes": changes}


def disk_records(state_dir):
    directory = disks_dir(state_dir)
    if not os.path.isdir(directory):
        return []
    return [read_json_file(os.path.join(directory, entry)) or {}
            for entry in sorted(os.listdir(directory)) if entry.endswith(".json")]


def verb_image_delete(spec):
    check_fields(spec, ["state_dir", "sha256"])
    state_dir = check_state_dir(spec["state_dir"])
    sha256 = check_sha256(spec["sha256"])
    changes = []
    with host_lock(state_dir):
        users = sorted(record["uuid"] for record in disk_records(state_dir)
                       if record.get("base_sha256") == sha256)
        if users:
            raise HostsideError("in_use", f"disks still use base image {sha256}",
                                details={"disks": users})
        path = base_image_path(state_dir, sha256)
        if os.path.exists(path):
            remove_file(path)
            changes.append(f"removed {sha256}")
    return {"sha256": sha256, "changes": changes}


def disk_virtual_size(path):
    return int(qemu_img_info(path)["virtual-size"])


def grow_disk(state_dir, path, size_bytes, changes):
    current = disk_virtual_size(path) if not qemu_processes_using(state_dir, path) else None
    running = running_vm_drive(state_dir, path)
    if running is not None:
        qmp_socket, reference = running
        current = block_virtual_size(qmp_socket, reference)
        if size_bytes > current:
            qmp_execute(qmp_socket, "block_resize", {**reference, "size": size_bytes})
            changes.append(f"grew {os.path.basename(path)} online to {size_bytes} bytes")
        return max(current, size_bytes)
    if current is None:
        raise HostsideError("in_use", f"{path} is open by a qemu this program did not start")
    if size_bytes < current:
        raise bad_spec(f"size_mib is smaller than the disk ({current} bytes): disks never shrink")
    if size_bytes > current:
        run_command(["qemu-img", "resize", "-f", "qcow2", path, str(size_bytes)])
        changes.append(f"grew {os.path.basename(path)} to {size_bytes} bytes")
    return size_bytes


def verb_disk_ensure(spec):
    """A VM disk: a qcow2 overlay of a base image (base_sha256) or a blank qcow2, at least
    size_mib large. An existing disk grows (online through QMP when its VM runs), never shrinks."""
    check_fields(spec, ["state_dir", "disk_uuid", "size_mib"], ["base_sha256"])
    state_dir = check_state_dir(spec["state_dir"])
    disk_uuid = check_uuid(spec["disk_uuid"])
    size_bytes = check_int(spec["size_mib"], "size_mib", 1, MAX_DISK_MIB) * 1024 * 1024
    base_sha = spec.get("base_sha256")
    base = None
    if base_sha is not None:
        base = base_image_path(state_dir, check_sha256(base_sha, "base_sha256"))
        if not os.path.isfile(base):
            raise HostsideError("not_found", f"base image {base_sha} is not on this host (image-ensure)")
    require_binaries("qemu-img")
    path = disk_path(state_dir, disk_uuid)
    changes = []
    with host_lock(state_dir):
        ensure_directory(disks_dir(state_dir))
        record_path = os.path.join(disks_dir(state_dir), f"{disk_uuid}.json")
        record = read_json_file(record_path)
        if record is not None and record.get("base_sha256") != base_sha and os.path.exists(path):
            raise HostsideError("in_use", f"disk {disk_uuid} exists with another base image "
                                f"({record.get('base_sha256')}); delete it first to rebuild")
        if not os.path.exists(path):
            if base is not None and disk_virtual_size(base) > size_bytes:
                raise bad_spec("size_mib is smaller than the base image's virtual size")
            write_json_file(record_path, {"uuid": disk_uuid, "base_sha256": base_sha})
            temporary = path + ".tmp"
            remove_file(temporary)
            argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
            if base is not None:
                argv += ["-b", base, "-F", "qcow2"]
            run_command([*argv, temporary, str(size_bytes)])
            os.replace(temporary, path)
            changes.append(f"created {os.path.basename(path)}")
            size = size_bytes
        else:
            size = grow_disk(state_dir, path, size_bytes, changes)
    return {"disk_uuid": disk_uuid, "path": path, "format": "qcow2", "virtual_size_bytes": size,
            "base_sha256": base_sha, "changes": changes}


def verb_disk_delete(spec):
    check_fields(spec, ["state_dir", "disk_uuid"])
    state_dir = check_state_dir(spec["state_dir"])
    disk_uuid = check_uuid(spec["disk_uuid"])
    path = disk_path(state_dir, disk_uuid)
    changes = []
    with host_lock(state_dir):
        users = qemu_processes_using(state_dir, path)
        if users:
            raise HostsideError("in_use", f"disk {disk_uuid} is open by a running VM",
                                details={"pids": users})
        for leftover in (path, path + ".tmp", os.path.join(disks_dir(state_dir), f"{disk_uuid}.json")):
            if os.path.exists(leftover):
                remove_file(leftover)
                changes.append(f"removed {os.path.basename(leftover)}")
    return {"disk_uuid": disk_uuid, "changes": changes}


def wait_for_block_job(qmp_socket, device, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = [job for job in qmp_execute(qmp_socket, "query-block-jobs") if job.get("device") == device]
        if not jobs:
            return
        time.sleep(0.1)
    raise HostsideError("timeout", f"the backup of {device} did not finish within {timeout_s} s")


def verb_disk_snapshot(spec):
    """A standalone, flattened qcow2 copy of a disk (crash-consistent when its VM runs: QMP
    drive-backup; a plain qemu-img convert when it does not). → path, sha256, size_bytes."""
    check_fields(spec, ["state_dir", "disk_uuid", "snapshot_uuid"])
    state_dir = check_state_dir(spec["state_dir"])
    disk_uuid = check_uuid(spec["disk_uuid"])
    snapshot_uuid = check_uuid(spec["snapshot_uuid"])
    require_binaries("qemu-img")
    source = disk_path(state_dir, disk_uuid)
    target = snapshot_path(state_dir, snapshot_uuid)
    changes = []
    if not os.path.isfile(target):
        if not os.path.isfile(source):
            raise HostsideError("not_found", f"disk {disk_uuid} is not on this host")
        ensure_directory(os.path.dirname(target))
        temporary = target + ".tmp"
        remove_file(temporary)
        running = running_vm_drive(state_dir, source)
        try:
            if running is not None:
                qmp_socket, drive = running[0], block_name(running[1])
                # The job id is named: a hot-plugged disk's node has no drive name to default to.
                qmp_execute(qmp_socket, "drive-backup", {"device": drive, "job-id": drive, "sync": "full",
                                                         "format": "qcow2", "target": temporary,
                                                         "mode": "absolute-paths"})
                wait_for_block_job(qmp_socket, drive, IMAGE_COMMAND_TIMEOUT_S)
            else:
                run_command(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", source, temporary],
                            timeout=IMAGE_COMMAND_TIMEOUT_S)
            refuse_external_references(qemu_img_info(temporary), "the snapshot")
        except HostsideError:
            remove_file(temporary)
            raise
        os.replace(temporary, target)
        changes.append(f"snapshot {snapshot_uuid} of {disk_uuid}")
    return {"snapshot_uuid": snapshot_uuid, "path": target, "sha256": file_sha256(target),
            "size_bytes": os.path.getsize(target), "virtual_size_bytes": disk_virtual_size(target),
            "changes": changes}


def verb_snapshot_delete(spec):
    check_fields(spec, ["state_dir", "snapshot_uuid"])
    state_dir = check_state_dir(spec["state_dir"])
    target = snapshot_path(state_dir, check_uuid(spec["snapshot_uuid"]))
    changes = []
    for leftover in (target, target + ".tmp"):
        if os.path.exists(leftover):
            remove_file(leftover)
            changes.append(f"removed {os.path.basename(leftover)}")
    return {"changes": changes}


def verb_image_list(spec):
    """The base images on this host with the disks (records) that are overlays of each: what a
    sweep of unused base images needs to know. Reads only."""
    check_fields(spec, ["state_dir"])
    state_dir = check_state_dir(spec["state_dir"])
    users = {}
    for record in disk_records(state_dir):
        if record.get("base_sha256"):
            users.setdefault(record["base_sha256"], []).append(record.get("uuid"))
    images = []
    directory = images_dir(state_dir)
    for entry in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        sha256, _, suffix = entry.partition(".")
        if suffix != "qcow2" or not SHA256_RE.match(sha256):
            continue
        stat = os.stat(os.path.join(directory, entry))
        images.append({"sha256": sha256, "size_bytes": stat.st_size, "modified": int(stat.st_mtime),
                       "disks": sorted(users.get(sha256, []))})
    return {"images": images}


# --- disk-attach / disk-detach: data volumes plugged into a running guest ---------------------
#
# A hot-plugged disk is a blockdev node (`blockdev-add`) under a virtio-blk-pci device on one of
# the spare root ports diskport0..7 that vm-up gives every guest. The VM's recorded spec lists it
# with a "hotplug" entry, so the other verbs (disk-delete, disk-ensure's online resize,
# disk-snapshot) know it is open. Disks a VM was started with sit on the root bus and stay until
# it stops; its next vm-up builds them all from the control plane's list again.

def hot_disk_names(disk_uuid):
    compact = disk_uuid.replace("-", "")
    # Node names have at most 31 characters; device ids have no such limit.
    return f"vd-{disk_uuid}", f"vdn-{compact[:24]}"


def parse_disk_plug_spec(spec):
    """(state_dir, vm uuid, disk uuid, qemu path, blockdev options, timeout) of disk-attach/-detach.
    A local disk is named by its uuid only (the verb finds its file): no spec can plug in any other
    file of the host, a base image included."""
    check_fields(spec, ["state_dir", "uuid", "disk_uuid"], ["rbd", "timeout_s"])
    state_dir = check_state_dir(spec["state_dir"])
    vm_uuid = check_uuid(spec["uuid"])
    disk_uuid = check_uuid(spec["disk_uuid"])
    timeout_s = check_number(spec.get("timeout_s", 30), "timeout_s", 1, 600)
    if spec.get("rbd") is not None:
        source = spec["rbd"]
        check_fields(source, ["pool", "image", "ceph_conf"], ["user"])
        target = parse_rbd_target(source, state_dir, "image")
        path = rbd_qemu_source(target)
        options = {"driver": "raw", "file": {"driver": "rbd", "pool": target["pool"], "image": target["name"],
                                             "conf": target["conf"], "user": target["user"]}}
    else:
        path = disk_path(state_dir, disk_uuid)
        options = {"driver": "qcow2", "file": {"driver": "file", "filename": path}}
    return state_dir, vm_uuid, disk_uuid, path, options, timeout_s


def recorded_disks(state_dir, vm_uuid):
    return (read_json_file(vm_paths(state_dir, vm_uuid)["spec"]) or {}).get("disks", [])


def remember_hot_disk(state_dir, vm_uuid, disk_uuid, entry):
    """Add (entry) or drop (None) the VM's hot-plugged disk in its recorded spec."""
    path = vm_paths(state_dir, vm_uuid)["spec"]
    recorded = read_json_file(path)
    if recorded is None:
        return
    disks = [disk for disk in recorded.get("disks", [])
             if (disk.get("hotplug") or {}).get("disk_uuid") != disk_uuid]
    if entry is not None:
        disks.append(entry)
    recorded["disks"] = disks
    write_json_file(path, recorded)


def hot_disk_users(state_dir, path):
    """pids of running VMs that have path plugged in by disk-attach."""
    directory = vms_dir(state_dir)
    pids = []
    for entry in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        for disk in recorded_disks(state_dir, entry):
            if disk.get("hotplug") and disk.get("path") == path:
                pid = running_qemu(state_dir, entry)
                if pid is not None:
                    pids.append(pid)
    return pids


def disk_ports_in_use(qmp_socket):
    """{slot: qdev id of the device on it} for the diskport root ports of a running guest."""
    used = {}
    ports = {disk_port_id(slot): slot for slot in range(MAX_HOTPLUG_DISKS)}
    for bus in qmp_execute(qmp_socket, "query-pci"):
        for device in bus.get("devices", []):
            if device.get("qdev_id") in ports:
                children = (device.get("pci_bridge") or {}).get("devices") or []
                if children:
                    used[ports[device["qdev_id"]]] = children[0].get("qdev_id", "")
    return used


def close_block_node(qmp_socket, node_name, timeout_s=5):
    """blockdev-del. qemu lets go of a node a moment after the device that used it is gone (and
    after a finished block job is cleaned up), so "in use" is asked again for a short while."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return qmp_execute(qmp_socket, "blockdev-del", {"node-name": node_name})
        except HostsideError as error:
            if "is in use" not in error.message or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def block_node_names(qmp_socket):
    return {node.get("node-name") for node in qmp_execute(qmp_socket, "query-named-block-nodes",
                                                          {"flat": True})}


def verb_disk_attach(spec):
    """Plug a disk into a running guest: blockdev-add, then device_add virtio-blk-pci on a free
    diskport. Attaching what is attached already answers the same. → device, slot, changes."""
    state_dir, vm_uuid, disk_uuid, path, options, _ = parse_disk_plug_spec(spec)
    device_id, node_name = hot_disk_names(disk_uuid)
    qmp_socket = vm_paths(state_dir, vm_uuid)["qmp"]
    changes = []
    with host_lock(state_dir):
        pid = running_qemu(state_dir, vm_uuid)
        if pid is None:
            raise HostsideError("not_found", f"VM {vm_uuid} is not running on this host")
        if options["file"]["driver"] == "file" and not os.path.isfile(path):
            raise HostsideError("not_found", f"disk {disk_uuid} is not on this host (disk-ensure first)")
        if any(disk.get("path") == path and not disk.get("hotplug") for disk in recorded_disks(state_dir, vm_uuid)):
            return {"uuid": vm_uuid, "disk_uuid": disk_uuid, "device": None, "slot": None,
                    "attached_at_boot": True, "changes": changes}
        others = [user for user in qemu_processes_using(state_dir, path) if user != pid]
        if others:
            raise HostsideError("in_use", f"disk {disk_uuid} is open by another VM", details={"pids": others})
        used = disk_ports_in_use(qmp_socket)
        slot = next((slot for slot, device in used.items() if device == device_id), None)
        if slot is None:
            slot = next((slot for slot in range(MAX_HOTPLUG_DISKS) if slot not in used), None)
            if slot is None:
                raise HostsideError("no_free_port", f"all {MAX_HOTPLUG_DISKS} hot-plug ports of the VM are "
                                    "taken; stop the VM to attach more disks")
            added_node = node_name not in block_node_names(qmp_socket)
            if added_node:
                qmp_execute(qmp_socket, "blockdev-add", {**options, "node-name": node_name})
            try:
                qmp_execute(qmp_socket, "device_add", {"driver": "virtio-blk-pci", "id": device_id,
                                                       "drive": node_name, "bus": disk_port_id(slot)})
            except HostsideError:
                if added_node:
                    with contextlib.suppress(HostsideError):
                        qmp_execute(qmp_socket, "blockdev-del", {"node-name": node_name})
                raise
            changes.append(f"plugged {device_id} into {disk_port_id(slot)}")
        remember_hot_disk(state_dir, vm_uuid, disk_uuid, {
            "path": path, "format": options["driver"], "readonly": False,
            "hotplug": {"disk_uuid": disk_uuid, "slot": slot, "device": device_id, "node": node_name}})
    return {"uuid": vm_uuid, "disk_uuid": disk_uuid, "device": device_id, "slot": slot,
            "bus": disk_port_id(slot), "attached_at_boot": False, "changes": changes}


def verb_disk_detach(spec):
    """Take a hot-plugged disk out of a running guest: device_del, wait until the guest lets go
    (timeout_s), blockdev-del. A disk the VM was started with cannot leave while it runs
    (not_hotpluggable); a VM that does not run has nothing plugged in."""
    state_dir, vm_uuid, disk_uuid, path, _, timeout_s = parse_disk_plug_spec(spec)
    device_id, node_name = hot_disk_names(disk_uuid)
    qmp_socket = vm_paths(state_dir, vm_uuid)["qmp"]
    changes = []
    if running_qemu(state_dir, vm_uuid) is not None:
        hot = any((disk.get("hotplug") or {}).get("disk_uuid") == disk_uuid
                  for disk in recorded_disks(state_dir, vm_uuid))
        if not hot and any(disk.get("path") == path for disk in recorded_disks(state_dir, vm_uuid)):
            raise HostsideError("not_hotpluggable", f"disk {disk_uuid} was attached when the VM started and "
                                "sits on a bus without hot-unplug; stop the VM to detach it")
        # The guest's answer takes seconds: wait outside the host lock, as vm-down does.
        try:
            if qmp_unplug_device(qmp_socket, device_id, timeout_s) == "removed":
                changes.append(f"unplugged {device_id}")
        except HostsideError as error:
            if error.code != "timeout":
                raise
            # Not "timeout": that one is retried, and a guest that ignored the request once
            # (paused, hung, no hot-plug driver) is not helped by asking again at once.
            raise HostsideError("unplug_timeout", f"{error.message}; disk {disk_uuid} stays attached") from None
    with host_lock(state_dir):
        if running_qemu(state_dir, vm_uuid) is not None and node_name in block_node_names(qmp_socket):
            close_block_node(qmp_socket, node_name)
            changes.append(f"closed {node_name}")
        remember_hot_disk(state_dir, vm_uuid, disk_uuid, None)
    return {"uuid": vm_uuid, "disk_uuid": disk_uuid, "device": device_id, "changes": changes}


# --- metadata: NoCloud config drive and the HTTP service ---------------------------------------

def parse_vm_metadata_spec(spec):
    check_fields(spec, ["state_dir", "uuid", "hostname", "ssh_keys", "user_data"],
                 ["name", "project_id", "network_config"])
    state_dir = check_state_dir(spec["state_dir"])
    vm_uuid = check_uuid(spec["uuid"])
    hostname = check_domain(spec["hostname"], "hostname")
    keys = []
    for index, key in enumerate(check_list(spec["ssh_keys"], "ssh_keys", 32)):
        check_fields(key, ["name", "public_key"])
        keys.append({"name": check_string(key["name"], f"ssh_keys[{index}].name", KEY_NAME_RE,
                                          "1 to 100 printable ASCII characters"),
                     "public_key": check_string(key["public_key"], f"ssh_keys[{index}].public_key",
                                                SSH_PUBLIC_KEY_RE, "an OpenSSH public key line")})
    user_data = spec["user_data"]
    if not isinstance(user_data, str) or len(user_data.encode()) > MAX_USER_DATA_BYTES:
        raise bad_spec(f"user_data must be text of at most {MAX_USER_DATA_BYTES} bytes")
    network_config = spec.get("network_config")
    if network_config is not None and (not isinstance(network_config, dict)
                                       or len(json.dumps(network_config)) > MAX_USER_DATA_BYTES):
        raise bad_spec("network_config must be a JSON object (a cloud-init network config)")
    name = spec.get("name", hostname)
    if not isinstance(name, str) or not CMDLINE_RE.match(name) or not 0 < len(name) <= 255:
        raise bad_spec("name must be printable ASCII")
    project_id = spec.get("project_id", "")
    if not isinstance(project_id, str) or not re.fullmatch(r"[0-9a-f-]{0,36}", project_id):
        raise bad_spec("project_id must be a UUID")
    return state_dir, {"uuid": vm_uuid, "name": name, "hostname": hostname, "ssh_keys": keys,
                       "user_data": user_data, "network_config": network_config,
                       "project_id": project_id}


def nocloud_meta_data(metadata):
    # YAML, written line by line so simple readers (the demo guest's sed) find local-hostname.
    # JSON strings are valid YAML double-quoted scalars.
    lines = [f"instance-id: {json.dumps(metadata['uuid'])}",
             f"local-hostname: {metadata['hostname']}"]
    if metadata["ssh_keys"]:
        lines.append("public-keys:")
        lines += [f"  - {json.dumps(key['public_key'])}" for key in metadata["ssh_keys"]]
    return "\n".join(lines) + "\n"


def iso_tool():
    for candidate in ("genisoimage", "xorrisofs", "mkisofs"):
        if find_binary(candidate):
            return candidate
    raise HostsideError("missing_binary", "not installed on this host: genisoimage (or xorriso)",
                        details={"missing": ["genisoimage"]})


def build_config_drive(directory, metadata):
    """A NoCloud config drive: ISO 9660 (Rock Ridge + Joliet) labelled cidata."""
    content = os.path.join(directory, "cidata.tmpdir")
    shutil.rmtree(content, ignore_errors=True)
    os.makedirs(content, mode=0o700)
    files = {"meta-data": nocloud_meta_data(metadata),
             "user-data": metadata["user_data"] or "#cloud-config\n{}\n"}
    if metadata["network_config"] is not None:
        files["network-config"] = json.dumps(metadata["network_config"], indent=1) + "\n"
    # Read by the uncloud demo guest only (cloud-init ignores it): ask the metadata service too.
    files["uncloud.cfg"] = "uc.metadata=1\n"
    for file_name, text in files.items():
        with open(os.path.join(content, file_name), "w") as handle:
            handle.write(text)
    target = os.path.join(directory, "cidata.iso")
    temporary = target + ".tmp"
    try:
        run_command([iso_tool(), "-quiet", "-output", temporary, "-volid", "cidata", "-joliet", "-rock",
                     "-input-charset", "utf-8", content])
    finally:
        shutil.rmtree(content, ignore_errors=True)
    os.replace(temporary, target)
    return target


def verb_vm_metadata(spec):
    """What the guest learns about itself: written for the metadata service and burnt into a
    NoCloud config drive (attach it to vm-up as {path, format: raw, readonly: true})."""
    state_dir, metadata = parse_vm_metadata_spec(spec)
    directory = vm_metadata_dir(state_dir, metadata["uuid"])
    changes = []
    with host_lock(state_dir):
        ensure_directory(directory)
        record = os.path.join(directory, "metadata.json")
        drive = os.path.join(directory, "cidata.iso")
        if read_json_file(record) != metadata or not os.path.isfile(drive):
            build_config_drive(directory, metadata)
            write_json_file(record, metadata)
            changes.append("wrote metadata and config drive")
    return {"uuid": metadata["uuid"], "config_drive": drive, "changes": changes}


def verb_vm_metadata_delete(spec):
    check_fields(spec, ["state_dir", "uuid"])
    state_dir = check_state_dir(spec["state_dir"])
    directory = vm_metadata_dir(state_dir, check_uuid(spec["uuid"]))
    changes = []
    with host_lock(state_dir):
        drive = os.path.join(directory, "cidata.iso")
        if os.path.exists(drive) and qemu_processes_using(state_dir, drive):
            raise HostsideError("in_use", "the config drive is attached to a running VM")
        if os.path.isdir(directory):
            shutil.rmtree(directory)
            changes.append("removed metadata")
    return {"changes": changes}


def metadata_server_paths(state_dir):
    directory = metadata_dir(state_dir)
    return {"dir": directory,
            "pid": os.path.join(directory, "server.pid"),
            "spec": os.path.join(directory, "server-spec.json"),
            "state": os.path.join(directory, "server-state.json"),
            "log": os.path.join(directory, "server.log"),
            # Named on the server's command line, so its process is found by its state_dir.
            "marker": os.path.join(directory, "server") + "/"}


def running_metadata_server(state_dir):
    paths = metadata_server_paths(state_dir)
    return owned_process(paths["pid"], f"uncloud_metadata={paths['marker']}")


def bridges_of_networks(state_dir):
    return {bridge_name(network["vni"]): network["vni"] for network in load_network_states(state_dir)}


def bridge_ifindex(bridge):
    text = read_text(f"/sys/class/net/{bridge}/ifindex")
    return int(text) if text is not None and text.strip().isdigit() else None


def metadata_bridges_up(state_dir):
    """{bridge: ifindex} of this host's networks' bridges that exist now: what the service must
    serve. The index tells a bridge made again (net-down, net-up) from the one a listener is on."""
    up = {}
    for bridge in bridges_of_networks(state_dir):
        index = bridge_ifindex(bridge)
        if index is not None:
            up[bridge] = index
    return up


def metadata_serves(state, wanted):
    """Whether the service's state file says it listens on every wanted bridge (the very same
    interfaces, when it says which; a service started by an older version names bridges only)."""
    if "served" in state:
        return all(state["served"].get(bridge) == index for bridge, index in wanted.items())
    return set(wanted) <= set(state.get("bridges", []))


def verb_metadata_up(spec):
    """Start the metadata service of this host unless it runs. It follows networks by itself:
    every second it binds [fe80::a9fe:a9fe%br<vni>]:80 on each bridge that is up."""
    check_fields(spec, ["state_dir"], ["port"])
    state_dir = check_state_dir(spec["state_dir"])
    port = check_int(spec.get("port", METADATA_PORT), "port", 1, 65535)
    require_binaries("ip")
    paths = metadata_server_paths(state_dir)
    changes = []
    # Every create asks: when the service runs on this port and serves every bridge, answer
    # without the host lock (other verbs may hold it for a while) and without starting anything.
    pid = running_metadata_server(state_dir)
    if pid is not None and (read_json_file(paths["spec"]) or {}).get("port") == port:
        state = read_json_file(paths["state"]) or {}
        if metadata_serves(state, metadata_bridges_up(state_dir)):
            return {"pid": pid, "address": METADATA_ADDRESS, "port": port,
                    "bridges": sorted(state.get("bridges", [])), "changes": changes}
    with host_lock(state_dir):
        ensure_directory(paths["dir"])
        pid = running_metadata_server(state_dir)
        recorded = read_json_file(paths["spec"])
        if pid is not None and (recorded or {}).get("port") != port:
            stop_process(pid)
            pid = None
            changes.append("stopped metadata service (port changed)")
        if pid is None:
            write_json_file(paths["spec"], {"state_dir": state_dir, "port": port})
            remove_file(paths["state"])
            with open(paths["spec"]) as spec_file, open(paths["log"], "a") as log:
                process = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-X", f"uncloud_metadata={paths['marker']}",
                     os.path.abspath(__file__), "metadata-serve"],
                    stdin=spec_file, stdout=log, stderr=log, cwd=paths["dir"], start_new_session=True)
            write_file_atomically(paths["pid"], f"{process.pid}\n")
            pid = process.pid
            changes.append("started metadata service")
    # Wait until every bridge that is up now is served, so a guest started next finds it. A
    # service that says it wakes on SIGUSR1 is told to look now instead of at its next rescan.
    wanted = metadata_bridges_up(state_dir)
    deadline = time.monotonic() + 10
    woken = False
    while True:
        state = read_json_file(paths["state"]) or {}
        served = set(state.get("bridges", []))
        if metadata_serves(state, wanted):
            break
        if not process_is_alive(pid) or time.monotonic() > deadline:
            raise HostsideError("command_failed", "the metadata service did not come up",
                                stderr=tail_of_file(paths["log"]))
        if not woken and state.get("wakes_on") == "SIGUSR1":
            send_signal(pid, signal.SIGUSR1)
            woken = True
        time.sleep(0.01)
    return {"pid": pid, "address": METADATA_ADDRESS, "port": port, "bridges": sorted(served),
            "changes": changes}


def verb_metadata_down(spec):
    check_fields(spec, ["state_dir"])
    state_dir = check_state_dir(spec["state_dir"])
    paths = metadata_server_paths(state_dir)
    changes = []
    pid = running_metadata_server(state_dir)
    if pid is not None:
        stop_process(pid)
        changes.append("stopped metadata service")
    for stale in (paths["pid"], paths["state"]):
        remove_file(stale)
    return {"changes": changes}


def metadata_for_source(state_dir, source, vni):
    """The metadata of the VM whose port on network vni owns source (its EUI-64 or link-local
    address). The nft guard drops any frame from a guest with another source address, so the
    source identifies the VM."""
    for port in load_port_states(state_dir):
        if port["vni"] == vni and source in (port["ipv6"], port["link_local"]):
            return read_json_file(os.path.join(vm_metadata_dir(state_dir, port["vm_uuid"]),
                                               "metadata.json"))
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


def serve_metadata_client(connection, state_dir, vni):
    with connection:
        connection.settimeout(5)
        source = connection.getpeername()[0].split("%", 1)[0]
        try:
            request = b""
            while b"\r\n\r\n" not in request and b"\n\n" not in request and len(request) < 8192:
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

    def client_thread(connection, vni):
        try:
            serve_metadata_client(connection, state_dir, vni)
        finally:
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
                listener.listen(16)
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
                connection, _ = key.fileobj.accept()
            except OSError:
                continue
            if not clients.acquire(blocking=False):
                connection.close()  # too many at once: a guest flooding us must not starve others
                continue
            connection.setblocking(True)
            threading.Thread(target=client_thread, args=(connection, key.data), daemon=True).start()


# --- Ceph RBD: base images imported once per pool, VM disks as clones of a protected snapshot ---

RBD_BASE_SNAPSHOT = "base"
RBD_IMPORT_TIMEOUT_S = 3600


def check_ceph_conf(value, state_dir):
    """ceph.conf of the cluster: a file below state_dir or below /etc/ceph (the admin's)."""
    if isinstance(value, str) and value.startswith("/etc/ceph/"):
        return check_path_under(value, "ceph_conf", "/etc/ceph")
    return check_path_under(value, "ceph_conf", state_dir)


def parse_rbd_target(spec, state_dir, name_field):
    pool = check_string(spec["pool"], "pool", RBD_NAME_RE, "letters, digits and ._- (at most 100)")
    name = check_string(spec[name_field], name_field, RBD_NAME_RE, "letters, digits and ._- (at most 100)")
    user = check_string(spec.get("user", "admin"), "user", RBD_NAME_RE, "a Ceph client id")
    return {"pool": pool, "name": name, "user": user, "conf": check_ceph_conf(spec["ceph_conf"], state_dir)}


def rbd_command(target, *args, timeout=COMMAND_TIMEOUT_S, check=True):
    return run_command(["rbd", "--conf", target["conf"], "--id", target["user"], *args], timeout=timeout,
                       check=check)


def rbd_spec_of(target, name=None):
    return f"{target['pool']}/{name or target['name']}"


def rbd_qemu_source(target, name=None):
    # qemu's rbd: syntax; the names and the path hold no ':' or ',' (checked above).
    return f"rbd:{rbd_spec_of(target, name)}:id={target['user']}:conf={target['conf']}"


def rbd_info(target, name=None):
    completed = rbd_command(target, "info", "--format", "json", rbd_spec_of(target, name), check=False)
    if completed.returncode != 0:
        if "No such file or directory" in completed.stderr:
            return None
        raise command_failure(["rbd", "info", rbd_spec_of(target, name)], completed)
    return json.loads(completed.stdout)


def rbd_snapshots(target, name=None):
    completed = rbd_command(target, "snap", "ls", "--format", "json", rbd_spec_of(target, name))
    return {snapshot["name"]: snapshot for snapshot in json.loads(completed.stdout or "[]")}


def rbd_images(target):
    completed = rbd_command(target, "ls", "--format", "json", target["pool"])
    return sorted(json.loads(completed.stdout or "[]"))


def parse_rbd_disk(disk, field, state_dir):
    """A vm-up disk in Ceph: {rbd: {pool, image, ceph_conf, user?}, format: raw, readonly?}."""
    check_fields(disk, ["rbd", "format"], ["readonly"])
    if disk["format"] != "raw":
        raise bad_spec(f"{field}.format must be raw for an rbd disk")
    source = disk["rbd"]
    check_fields(source, ["pool", "image", "ceph_conf"], ["user"])
    target = parse_rbd_target(source, state_dir, "image")
    return {"path": rbd_qemu_source(target), "format": "raw",
            "readonly": check_bool(disk.get("readonly", False), f"{field}.readonly")}


def verb_rbd_image_ensure(spec):
    """A base image in the pool, once per checksum: <name> with the protected snapshot `base`,
    converted from the verified local base file (image-ensure first) by qemu-img."""
    check_fields(spec, ["state_dir", "pool", "image", "sha256", "ceph_conf"], ["user"])
    state_dir = check_state_dir(spec["state_dir"])
    target = parse_rbd_target(spec, state_dir, "image")
    base = base_image_path(state_dir, check_sha256(spec["sha256"]))
    require_binaries("rbd", "qemu-img")
    changes = []
    snapshots = rbd_snapshots(target) if rbd_info(target) is not None else None
    if snapshots is None or RBD_BASE_SNAPSHOT not in snapshots:
        if not os.path.isfile(base):
            raise HostsideError("not_found", f"base image {spec['sha256']} is not on this host (image-ensure)")
        partial = f"{target['name']}.importing"
        if rbd_info(target, partial) is not None:
            rbd_command(target, "snap", "purge", rbd_spec_of(target, partial))
            rbd_command(target, "rm", "--no-progress", rbd_spec_of(target, partial))
        if snapshots is not None:  # an image without its snapshot: a crashed earlier import
            rbd_command(target, "rm", "--no-progress", rbd_spec_of(target))
        run_command(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", base, rbd_qemu_source(target, partial)],
                    timeout=RBD_IMPORT_TIMEOUT_S)
        rbd_command(target, "snap", "create", f"{rbd_spec_of(target, partial)}@{RBD_BASE_SNAPSHOT}")
        rbd_command(target, "snap", "protect", f"{rbd_spec_of(target, partial)}@{RBD_BASE_SNAPSHOT}")
        rbd_command(target, "rename", rbd_spec_of(target, partial), rbd_spec_of(target))
        changes.append(f"imported {rbd_spec_of(target)}")
    return {"image": rbd_spec_of(target), "snapshot": RBD_BASE_SNAPSHOT, "changes": changes}


def verb_rbd_image_delete(spec):
    check_fields(spec, ["state_dir", "pool", "image", "ceph_conf"], ["user"])
    state_dir = check_state_dir(spec["state_dir"])
    target = parse_rbd_target(spec, state_dir, "image")
    require_binaries("rbd")
    changes = []
    if rbd_info(target) is not None:
        children = rbd_command(target, "children", "--format", "json",
                               f"{rbd_spec_of(target)}@{RBD_BASE_SNAPSHOT}", check=False)
        if children.returncode == 0 and json.loads(children.stdout or "[]"):
            raise HostsideError("in_use", f"disks are still clones of {rbd_spec_of(target)}",
                                details={"clones": json.loads(children.stdout)})
        if RBD_BASE_SNAPSHOT in rbd_snapshots(target):
            rbd_command(target, "snap", "unprotect", f"{rbd_spec_of(target)}@{RBD_BASE_SNAPSHOT}", check=False)
        rbd_command(target, "snap", "purge", rbd_spec_of(target))
        rbd_command(target, "rm", "--no-progress", rbd_spec_of(target))
        changes.append(f"removed {rbd_spec_of(target)}")
    return {"changes": changes}


def verb_rbd_disk_ensure(spec):
    """A VM disk in the pool: a clone of <base>@base, or blank; grows (online via QMP when its
    VM runs), never shrinks. → the vm-up disk entry."""
    check_fields(spec, ["state_dir", "pool", "disk", "size_mib", "ceph_conf"], ["user", "base"])
    state_dir = check_state_dir(spec["state_dir"])
    target = parse_rbd_target(spec, state_dir, "disk")
    size_bytes = check_int(spec["size_mib"], "size_mib", 1, MAX_DISK_MIB) * 1024 * 1024
    base = spec.get("base")
    if base is not None:
        check_string(base, "base", RBD_NAME_RE, "an rbd image name")
    require_binaries("rbd")
    changes = []
    info = rbd_info(target)
    if info is None:
        if base is not None:
            base_info = rbd_info(target, base)
            if base_info is None:
                raise HostsideError("not_found", f"base {target['pool']}/{base} is not in the pool "
                                    "(rbd-image-ensure)")
            if base_info["size"] > size_bytes:
                raise bad_spec("size_mib is smaller than the base image")
            rbd_command(target, "clone", f"{rbd_spec_of(target, base)}@{RBD_BASE_SNAPSHOT}", rbd_spec_of(target))
            changes.append(f"cloned {rbd_spec_of(target)} from {base}")
        else:
            rbd_command(target, "create", "--size", f"{size_bytes // (1024 * 1024)}M", rbd_spec_of(target))
            changes.append(f"created {rbd_spec_of(target)}")
        info = rbd_info(target)
    if size_bytes < info["size"]:
        raise bad_spec(f"size_mib is smaller than the disk ({info['size']} bytes): disks never shrink")
    if size_bytes > info["size"]:
        rbd_command(target, "resize", "--no-progress", "--size", f"{size_bytes // (1024 * 1024)}M",
                    rbd_spec_of(target))
        running = running_vm_drive(state_dir, rbd_qemu_source(target))
        if running is not None:  # qemu caches the size: tell it, so the guest sees the new one
            qmp_execute(running[0], "block_resize", {**running[1], "size": size_bytes})
        changes.append(f"grew {rbd_spec_of(target)} to {size_bytes} bytes")
    source = {"pool": target["pool"], "image": target["name"], "ceph_conf": target["conf"], "user": target["user"]}
    return {"disk": {"rbd": source, "format": "raw"}, "source": rbd_qemu_source(target),
            "virtual_size_bytes": max(size_bytes, info["size"]), "changes": changes}


def verb_rbd_disk_delete(spec):
    check_fields(spec, ["state_dir", "pool", "disk", "ceph_conf"], ["user"])
    state_dir = check_state_dir(spec["state_dir"])
    target = parse_rbd_target(spec, state_dir, "disk")
    require_binaries("rbd")
    users = qemu_processes_using(state_dir, rbd_qemu_source(target))
    if users:
        raise HostsideError("in_use", f"{rbd_spec_of(target)} is open by a running VM", details={"pids": users})
    changes = []
    if rbd_info(target) is not None:
        for name, snapshot in rbd_snapshots(target).items():
            if snapshot.get("protected") == "true":
                rbd_command(target, "snap", "unprotect", f"{rbd_spec_of(target)}@{name}")
        rbd_command(target, "snap", "purge", "--no-progress", rbd_spec_of(target))
        rbd_command(target, "rm", "--no-progress", rbd_spec_of(target))
        changes.append(f"removed {rbd_spec_of(target)}")
    return {"changes": changes}


def parse_rbd_snapshot_spec(spec):
    """(target disk, snapshot name) of an rbd-snapshot or rbd-snapshot-delete spec."""
    check_fields(spec, ["state_dir", "pool", "disk", "snapshot", "ceph_conf"], ["user"])
    state_dir = check_state_dir(spec["state_dir"])
    target = parse_rbd_target(spec, state_dir, "disk")
    return target, check_string(spec["snapshot"], "snapshot", RBD_NAME_RE, "an rbd snapshot name")


def verb_rbd_snapshot(spec):
    """A snapshot of a disk (`rbd snap create`: crash-consistent, instantaneous)."""
    target, snapshot = parse_rbd_snapshot_spec(spec)
    require_binaries("rbd")
    if rbd_info(target) is None:
        raise HostsideError("not_found", f"{rbd_spec_of(target)} does not exist")
    changes = []
    if snapshot not in rbd_snapshots(target):
        rbd_command(target, "snap", "create", f"{rbd_spec_of(target)}@{snapshot}")
        changes.append(f"snapshot {rbd_spec_of(target)}@{snapshot}")
    size = rbd_snapshots(target)[snapshot]["size"]
    return {"path": f"{rbd_spec_of(target)}@{snapshot}", "virtual_size_bytes": size, "changes": changes}


def verb_rbd_snapshot_delete(spec):
    target, snapshot = parse_rbd_snapshot_spec(spec)
    require_binaries("rbd")
    changes = []
    if rbd_info(target) is not None and snapshot in rbd_snapshots(target):
        rbd_command(target, "snap", "rm", "--no-progress", f"{rbd_spec_of(target)}@{snapshot}")
        changes.append(f"removed {rbd_spec_of(target)}@{snapshot}")
    return {"changes": changes}


def verb_rbd_inventory(spec):
    check_fields(spec, ["state_dir", "pool", "ceph_conf"], ["user"])
    state_dir = check_state_dir(spec["state_dir"])
    target = parse_rbd_target({**spec, "image": "x"}, state_dir, "image")
    require_binaries("rbd")
    return {"pool": target["pool"], "images": rbd_images(target)}


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# batch: several verbs in one request
# ---------------------------------------------------------------------------------------------

MAX_BATCH_CALLS = 32
UNBATCHABLE_VERBS = ("batch", "metadata-serve")


def parse_batch_calls(calls):
    parsed = []
    for index, call in enumerate(check_list(calls, "calls", MAX_BATCH_CALLS)):
        check_fields(call, ["verb", "spec"])
        verb, spec = call["verb"], call["spec"]
        if verb not in VERBS or verb in UNBATCHABLE_VERBS:
            raise bad_spec(f"calls[{index}].verb: {verb!r} cannot be batched")
        if not isinstance(spec, dict):
            raise bad_spec(f"calls[{index}].spec must be a JSON object")
        parsed.append((verb, spec))
    return parsed


def verb_batch(spec):
    """Run the calls in order and stop at the first failure: a workflow step that needs several
    verbs pays one round trip. Each verb keeps its own checks, lock and idempotency, so a batch run
    again is as safe as its verbs run again. A failure is that verb's error plus batch_index,
    batch_verb and batch_results (the answers of the calls before it)."""
    check_fields(spec, ["state_dir", "calls"])
    state_dir = check_state_dir(spec["state_dir"])
    calls = parse_batch_calls(spec["calls"])  # all checked before any runs
    results, elapsed_ms = [], []
    for index, (verb, call_spec) in enumerate(calls):
        started = time.perf_counter()
        try:
            results.append(run_verb(verb, {"state_dir": state_dir, **call_spec}))
        except HostsideError as error:
            error.details = {**error.details, "batch_index": index, "batch_verb": verb,
                             "batch_results": results}
            raise
        elapsed_ms.append(round((time.perf_counter() - started) * 1000, 1))
    return {"results": results, "elapsed_ms": elapsed_ms}


# ---------------------------------------------------------------------------------------------
# host-down: every guest and network of this state dir down (bin/run --down on a demo machine)
# ---------------------------------------------------------------------------------------------

def verb_host_down(spec):
    """Stop every guest of this state dir (ACPI powerdown, hard after timeout_s, or at once with
    hard), take every network down (radvd, bridge, VXLAN), stop the metadata service and the NAT64
    translators, and drop this program's nft tables. Disks, images and config drives stay: a later
    vm-up starts the same guests again. Each part is an existing verb, so running it twice is safe."""
    check_fields(spec, ["state_dir"], ["timeout_s", "hard", "underlay_device"])
    state_dir = check_state_dir(spec["state_dir"])
    timeout_s = check_number(spec.get("timeout_s", 30), "timeout_s", 0, 600)
    hard = check_bool(spec.get("hard", False), "hard")
    require_binaries("ip", "nft")
    changes = []
    stopped = []
    for vm in inventory_vms(state_dir):
        leftovers = [tap for tap in vm["taps"]
                     if sysfs_link(tap) is not None or os.path.exists(port_state_path(state_dir, tap))]
        if vm["pid"] is None and not leftovers:
            continue  # already down (vm-down would only apply the rules again)
        answer = verb_vm_down({"state_dir": state_dir, "uuid": vm["uuid"], "timeout_s": timeout_s, "hard": hard})
        if vm["pid"] is not None:
            stopped.append(vm["uuid"])
        changes += [f"{vm['uuid']}: {change}" for change in answer.get("changes", [])]
    networks = []
    for network in load_network_states(state_dir):
        answer = verb_net_down({"state_dir": state_dir, "vni": network["vni"], "force": True})
        networks.append(network["vni"])
        changes += [f"vni {network['vni']}: {change}" for change in answer["changes"]]
    changes += verb_metadata_down({"state_dir": state_dir})["changes"]
    underlay_device = check_interface_name(spec.get("underlay_device", "lo"), "underlay_device")
    with host_lock(state_dir):
        if os.path.isdir(nat64_dir(state_dir)):
            for name in sorted(os.listdir(nat64_dir(state_dir))):
                if name.isdigit():
                    remove_nat64_pool(state_dir, int(name), underlay_device, changes)
        for family, table in ((NFT_FAMILY, NFT_TABLE), (SG_FAMILY, SG_TABLE)):
            if run_command(["nft", "list", "table", family, table], check=False).returncode == 0:
                run_command(["nft", "delete", "table", family, table])
                changes.append(f"deleted nft table {family} {table}")
        remove_file(os.path.join(state_dir, "nftables.conf"))
    return {"stopped_vms": stopped, "networks_down": networks, "changes": changes}


VERBS = {
    "host-info": verb_host_info,
    "host-down": verb_host_down,
    "batch": verb_batch,
    "net-up": verb_net_up,
    "net-down": verb_net_down,
    "vm-up": verb_vm_up,
    "vm-down": verb_vm_down,
    "vm-status": verb_vm_status,
    "vm-reboot": verb_vm_reboot,
    "vm-firewall": verb_vm_firewall,
    "nic-attach": verb_nic_attach,
    "nic-detach": verb_nic_detach,
    "nat64-sync": verb_nat64_sync,
    "inventory": verb_inventory,
    # images app
    "image-ensure": verb_image_ensure,
    "image-delete": verb_image_delete,
    "disk-ensure": verb_disk_ensure,
    "disk-delete": verb_disk_delete,
    "disk-snapshot": verb_disk_snapshot,
    "snapshot-delete": verb_snapshot_delete,
    "image-list": verb_image_list,
    "disk-attach": verb_disk_attach,
    "disk-detach": verb_disk_detach,
    "vm-metadata": verb_vm_metadata,
    "vm-metadata-delete": verb_vm_metadata_delete,
    "metadata-up": verb_metadata_up,
    "metadata-down": verb_metadata_down,
    "metadata-serve": verb_metadata_serve,
    "rbd-image-ensure": verb_rbd_image_ensure,
    "rbd-image-delete": verb_rbd_image_delete,
    "rbd-disk-ensure": verb_rbd_disk_ensure,
    "rbd-disk-delete": verb_rbd_disk_delete,
    "rbd-snapshot": verb_rbd_snapshot,
    "rbd-snapshot-delete": verb_rbd_snapshot_delete,
    "rbd-inventory": verb_rbd_inventory,
}


def read_spec(stdin_text):
    try:
        return json.loads(stdin_text)
    except ValueError as error:
        raise bad_spec(f"stdin is not JSON: {error}") from None


def run_verb(verb, spec):
    if verb not in VERBS:
        raise bad_spec(f"unknown verb {verb!r}; verbs: {', '.join(VERBS)}")
    try:
        return VERBS[verb](spec)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise HostsideError("disk_full", f"no space left: {error}") from None
        raise HostsideError("command_failed", f"{type(error).__name__}: {error}") from None


def answer_for(verb, read_request_spec):
    """One verb's answer object and exit status; the caller must always get one JSON object."""
    try:
        result = run_verb(verb, read_request_spec())
        return {"ok": True, "result": result}, EXIT_OK
    except HostsideError as error:
        return {"ok": False, "error": error.as_dict()}, (EXIT_BAD_SPEC if error.code == "bad_spec"
                                                          else EXIT_FAILURE)
    except Exception as error:
        return {"ok": False, "error": {"code": "internal_error",
                                       "message": f"{type(error).__name__}: {error}",
                                       "stderr": "", "argv": []}}, EXIT_FAILURE


def write_answer(answer):
    sys.stdout.write(json.dumps(answer, sort_keys=True) + "\n")
    sys.stdout.flush()


def serve():
    """Answer requests until stdin closes: one JSON line `{"verb": ..., "spec": {...}}` in, one
    answer line out. The control plane keeps one such process per pooled SSH connection, so a
    verb costs a round trip on an open channel instead of an SSH exec and a Python start."""
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = read_spec(line)
            if not isinstance(request, dict) or set(request) != {"verb", "spec"} \
                    or not isinstance(request["verb"], str):
                raise bad_spec('a request is one line: {"verb": "...", "spec": {...}}')
            if request["verb"] == "serve":
                raise bad_spec("serve cannot be requested inside serve")
        except HostsideError as error:
            write_answer({"ok": False, "error": error.as_dict()})
            continue
        answer, _ = answer_for(request["verb"], lambda request=request: request["spec"])
        write_answer(answer)
    return EXIT_OK


def main():
    argv = sys.argv[1:]
    if argv == ["serve"]:
        return serve()
    if len(argv) != 1:
        write_answer({"ok": False, "error": bad_spec(
            f"usage: uncloud_hostside.py VERB < spec.json, or serve; verbs: {', '.join(VERBS)}"
        ).as_dict()})
        return EXIT_BAD_SPEC
    answer, status = answer_for(argv[0], lambda: read_spec(sys.stdin.read()))
    write_answer(answer)
    return status


if __name__ == "__main__":
    sys.exit(main())
