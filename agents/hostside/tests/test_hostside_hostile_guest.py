"""A hostile guest stays in its box (issue 24): every attack a customer with root in a guest tried.

One host, two networks: VNI 100 holds the attacker, a neighbour and a third guest; VNI 200 holds a
stranger (another customer). All are VMs made by vm-up whose qemu is then killed (as in
test_hostside_guard), so their taps, bridge ports, FDB entries and nft rules are exactly the
product's. The attacker's tap is wired to a namespace (hostile_guest.HostileGuest): a real network
stack plus scapy writing crafted frames. The other guests' taps are read with tap_io, or wired to a
namespace of their own when they must fetch something. Every guest opens UDP 40000 in its firewall,
so an injected datagram on that port would be delivered if it got through.
"""
import ipaddress
import json
from dataclasses import dataclass

import pytest
from hostile_guest import HostileGuest, connect_results, router_link_local, scapy_frames, sniffed
from hostside_testlib import (
    PYTHON,
    eui64,
    kill_and_wait,
    link_local,
    net_spec,
    nft_counters,
    nic,
    ok,
    received_frames,
    start_tap_io,
    vm_spec,
)

PREFIX_A, PREFIX_B = "2001:db8:240:1::/64", "2001:db8:240:2::/64"
ROUTER_MAC_A = "02:75:63:00:00:64"
METADATA = "fe80::a9fe:a9fe"
OPEN_TEST_PORT = [{"protocol": "udp", "port_min": 40000, "source": "::/0"}]
FOREIGN_MAC = "02:00:00:e0:00:99"
GUESTS = {  # name: (uuid, mac, vni, prefix)
    "attacker": ("7e000000-0000-4000-8000-000000000001", "02:00:00:e0:00:01", 100, PREFIX_A),
    "neighbour": ("7e000000-0000-4000-8000-000000000002", "02:00:00:e0:00:02", 100, PREFIX_A),
    "third": ("7e000000-0000-4000-8000-000000000003", "02:00:00:e0:00:03", 100, PREFIX_A),
    "stranger": ("7e000000-0000-4000-8000-000000000004", "02:00:00:e0:00:04", 200, PREFIX_B),
}
KEYS = {"attacker": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEVpbEF0dGFja2VyS2V5IGZvciB0ZXN0cw attacker",
        "neighbour": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5laWdoYm91clNlY3JldEtleUZvclRlc3Q neighbour"}


def mac_of(name):
    return GUESTS[name][1]


def address_of(name):
    _, mac, _, prefix = GUESTS[name]
    return str(eui64(prefix, mac))


def link_local_of(name):
    return str(link_local(mac_of(name)))


@dataclass
class Box:
    host: object
    taps: dict
    attacker: HostileGuest
    underlay_address: str

    def inet_counters(self, chain):
        if self.host.run(["nft", "list", "chain", "inet", "uncloud_sg", chain], check=False).returncode:
            return {}  # no such chain (yet): nothing counted
        return nft_counters(self.host, chain, family="inet", table="uncloud_sg")

    def guard_counters(self, name):
        return nft_counters(self.host, f"guard_{self.taps[name]}")


def underlay_address_of(host):
    listing = json.loads(host.run(["ip", "-j", "-6", "addr", "show", "dev", host.underlay_device,
                                   "scope", "global"]).stdout)
    return listing[0]["addr_info"][0]["local"]


@pytest.fixture
def box(hosts):
    host = hosts[0]
    ok(host, "net-up", **net_spec(100, PREFIX_A, host))
    ok(host, "net-up", **net_spec(200, PREFIX_B, host))
    taps = {}
    for name, (vm_uuid, mac, vni, prefix) in GUESTS.items():
        vm = ok(host, "vm-up", **vm_spec(vm_uuid, [nic(mac, vni, prefix, ingress=OPEN_TEST_PORT)], name=name))
        kill_and_wait(vm["pid"])
        taps[name] = vm["taps"][0]
    underlay_address = underlay_address_of(host)
    attacker = HostileGuest(host, taps["attacker"], mac_of("attacker"), address_of("attacker"), 100)
    try:
        yield Box(host, taps, attacker, underlay_address)
    finally:
        attacker.close()
        for vm_uuid, *_ in GUESTS.values():
            ok(host, "vm-down", uuid=vm_uuid, hard=True)


def listen(box, *names, seconds=8):
    """Read the guests' taps; long enough for scapy to start in the attacker's namespace under load."""
    return {name: start_tap_io(box.host, box.taps[name], seconds=seconds) for name in names}


def heard(listeners):
    return {name: received_frames(process) for name, process in listeners.items()}


def carries(frames, marker):
    return [frame for frame in frames if marker in frame]


def test_vxlan_from_a_guest_reaches_no_network(box):
    """VXLAN to the host's addresses (router link-local on the bridge, the metadata address, the
    underlay address routed through the bridge), for the guest's own VNI and another customer's."""
    inner = {
        100: (f"Ether(dst='{mac_of('neighbour')}', src='{mac_of('third')}')/"
              f"IPv6(src='{address_of('third')}', dst='{address_of('neighbour')}')/"
              "UDP(sport=40000, dport=40000)/Raw(b'UNCLOUD-VXLAN-INJECTED')"),
        200: (f"Ether(dst='{mac_of('stranger')}', src='{FOREIGN_MAC}')/"
              f"IPv6(src='{ipaddress.IPv6Network(PREFIX_B)[1]}', dst='{address_of('stranger')}')/"
              "UDP(sport=40000, dport=40000)/Raw(b'UNCLOUD-VXLAN-INJECTED')"),
    }
    targets = [(router_link_local(100), link_local_of("attacker")), (METADATA, link_local_of("attacker")),
               (box.underlay_address, address_of("attacker"))]
    frames = [f"Ether(dst='{ROUTER_MAC_A}', src='{mac_of('attacker')}')/IPv6(src='{source}', dst='{target}')/"
              f"UDP(sport=4789, dport=4789)/VXLAN(vni={vni}, flags=0x08)/{inner[vni]}"
              for target, source in targets for vni in (100, 200)]
    ok(box.host, "metadata-up")  # the metadata address is one of the host's too
    listeners = listen(box, "neighbour", "stranger")
    box.attacker.send(*frames)
    at = heard(listeners)
    assert not carries(at["neighbour"], b"UNCLOUD-VXLAN-INJECTED")
    assert not carries(at["stranger"], b"UNCLOUD-VXLAN-INJECTED")
    assert box.inet_counters("towards_host")["vxlan-not-underlay"] >= len(frames)


def test_a_guest_is_not_routed_into_the_underlay(hosts):
    """The other hosts take VXLAN from the underlay: a guest's VXLAN to another host's underlay
    address, routed by its own host, would reach every network there. Nor may it reach their SSH."""
    host, other = hosts
    ok(host, "net-up", **net_spec(100, PREFIX_A, host))
    ok(other, "net-up", **net_spec(200, PREFIX_B, other))
    attacker_uuid, attacker_mac, _, _ = GUESTS["attacker"]
    stranger_uuid, stranger_mac, _, _ = GUESTS["stranger"]
    attacker_vm = ok(host, "vm-up", **vm_spec(attacker_uuid, [nic(attacker_mac, 100, PREFIX_A)], name="attacker"))
    stranger_vm = ok(other, "vm-up", **vm_spec(stranger_uuid, [nic(stranger_mac, 200, PREFIX_B,
                                                                   ingress=OPEN_TEST_PORT)], name="stranger"))
    for vm in (attacker_vm, stranger_vm):
        kill_and_wait(vm["pid"])
    attacker = HostileGuest(host, attacker_vm["taps"][0], attacker_mac, address_of("attacker"), 100)
    try:
        target = underlay_address_of(other)
        inner = (f"Ether(dst='{stranger_mac}', src='{FOREIGN_MAC}')/"
                 f"IPv6(src='{ipaddress.IPv6Network(PREFIX_B)[1]}', dst='{address_of('stranger')}')/"
                 "UDP(sport=40000, dport=40000)/Raw(b'UNCLOUD-VXLAN-ACROSS')")
        frames = [f"Ether(dst='{ROUTER_MAC_A}', src='{attacker_mac}')/IPv6(src='{address_of('attacker')}', "
                  f"dst='{target}')/UDP(sport=4789, dport=4789)/VXLAN(vni=200, flags=0x08)/{inner}"] * 3
        stranger = start_tap_io(other, stranger_vm["taps"][0], seconds=8)
        attacker.send(*frames)
        assert not carries(received_frames(stranger), b"UNCLOUD-VXLAN-ACROSS")
        assert connect_results(attacker, [[target, 22]]) == {f"[{target}]:22": "timeout"}
        counters = nft_counters(host, "towards_guests", family="inet", table="uncloud_sg")
        assert counters["guest-to-underlay"] >= len(frames) + 1
    finally:
        attacker.close()
        ok(host, "vm-down", uuid=attacker_uuid, hard=True)
        ok(other, "vm-down", uuid=stranger_uuid, hard=True)


def test_the_host_answers_a_guest_only_as_router_and_metadata_service(box):
    ok(box.host, "metadata-up")
    router = f"{router_link_local(100)}%eth0"
    closed_ports = (22, 80, 443, 4789, 8080)
    targets = [[address, port] for address in (router, box.underlay_address) for port in closed_ports]
    targets += [[f"{METADATA}%eth0", 22], [f"{METADATA}%eth0", 80]]
    before = box.inet_counters("from_guests").get("guest-to-host", 0)
    results = connect_results(box.attacker, targets)
    assert results.pop(f"[{METADATA}%eth0]:80") == "open"
    assert set(results.values()) == {"timeout"}, results  # no reset: nothing answers
    assert box.inet_counters("from_guests")["guest-to-host"] >= before + len(results)
    # What a guest needs of its router still works: neighbour discovery and ping.
    assert box.attacker.run(["ping", "-c", "1", "-W", "5", router], check=False).returncode == 0

    # The host is one more source for a guest's firewall: the neighbour opens UDP 40000 only.
    box.host.run(["ip", "-6", "neigh", "replace", address_of("neighbour"), "lladdr", mac_of("neighbour"),
                  "dev", "br100", "nud", "permanent"])
    listeners = listen(box, "neighbour", seconds=6)
    probe = ("import socket\n"
             "try:\n"
             f"    socket.create_connection(('{address_of('neighbour')}', 22), timeout=2)\n"
             "except OSError as error:\n"
             "    print(error)\n")
    box.host.run(["/usr/bin/python3", "-c", probe])
    syns = [frame for frame in heard(listeners)["neighbour"]
            if frame[12:14] == b"\x86\xdd" and frame[20] == 6 and frame[56:58] == (22).to_bytes(2, "big")]
    assert syns == []
    assert box.inet_counters(f"ingress_{box.taps['neighbour']}")["security-group"] >= 1


def test_neighbour_discovery_speaks_only_for_the_guest_itself(box):
    host, neighbour = box.host, address_of("neighbour")
    # The host knows the neighbour: an override NA from the attacker would replace this entry.
    host.run(["ip", "-6", "neigh", "replace", neighbour, "lladdr", mac_of("neighbour"), "dev", "br100",
              "nud", "stale"])
    attacker_mac, attacker_ll = mac_of("attacker"), link_local_of("attacker")
    to_all = f"Ether(dst='33:33:00:00:00:01', src='{attacker_mac}')/IPv6(src='{attacker_ll}', dst='ff02::1', hlim=255)"
    solicited = ipaddress.IPv6Address(int(ipaddress.IPv6Address("ff02::1:ff00:0")) | (int(ipaddress.IPv6Address(neighbour)) & 0xFFFFFF))
    to_neighbour = (f"Ether(dst='33:33:{solicited.packed[12]:02x}:{solicited.packed[13]:02x}:"
                    f"{solicited.packed[14]:02x}:{solicited.packed[15]:02x}', src='{attacker_mac}')/"
                    f"IPv6(src='{address_of('attacker')}', dst='{solicited}', hlim=255)")
    bad = {
        "nd-foreign-target": [
            f"{to_all}/ICMPv6ND_NA(tgt='{neighbour}', R=0, S=0, O=1)/ICMPv6NDOptDstLLAddr(lladdr='{attacker_mac}')",
            f"{to_all}/ICMPv6ND_NA(tgt='{link_local_of('neighbour')}', R=0, S=0, O=1)"
            f"/ICMPv6NDOptDstLLAddr(lladdr='{attacker_mac}')"],
        "nd-foreign-lladdr": [
            f"{to_neighbour}/ICMPv6ND_NS(tgt='{neighbour}')/ICMPv6NDOptSrcLLAddr(lladdr='{FOREIGN_MAC}')",
            f"{to_all}/ICMPv6ND_NA(tgt='{address_of('attacker')}', R=0, S=0, O=1)"
            f"/ICMPv6NDOptDstLLAddr(lladdr='{FOREIGN_MAC}')",
            f"Ether(dst='33:33:00:00:00:02', src='{attacker_mac}')/IPv6(src='{attacker_ll}', dst='ff02::2', hlim=255)"
            f"/ICMPv6ND_RS()/ICMPv6NDOptSrcLLAddr(lladdr='{FOREIGN_MAC}')"],
        # A link-layer option hidden behind another option, where the guard does not look.
        "nd-options": [
            f"{to_neighbour}/ICMPv6ND_NS(tgt='{neighbour}')/ICMPv6NDOptUnknown(type=14, len=1, data=b'abcdef')"
            f"/ICMPv6NDOptSrcLLAddr(lladdr='{FOREIGN_MAC}')"],
    }
    good = f"{to_all}/ICMPv6ND_NA(tgt='{address_of('attacker')}', R=0, S=0, O=1)/ICMPv6NDOptDstLLAddr(lladdr='{attacker_mac}')"
    listeners = listen(box, "neighbour", "third")
    sent = box.attacker.send(*(expression for expressions in bad.values() for expression in expressions), good)
    at = heard(listeners)
    assert sent[-1] in at["neighbour"]  # the guest may speak for itself
    for frame in sent[:-1]:
        assert frame not in at["neighbour"] and frame not in at["third"]
    counters = box.guard_counters("attacker")
    for reason, expressions in bad.items():
        assert counters[reason] >= len(expressions), (reason, counters)
    entry = json.loads(host.run(["ip", "-j", "-6", "neigh", "show", neighbour, "dev", "br100"]).stdout)
    assert [item.get("lladdr") for item in entry] == [mac_of("neighbour")]


def fdb_ports(host, mac):
    entries = json.loads(host.run(["bridge", "-j", "fdb", "show", "br", "br100"]).stdout)
    return {entry["ifname"]: entry.get("state", "") for entry in entries if entry["mac"] == mac}


def test_a_forged_source_mac_does_not_move_the_fdb(box):
    neighbour_mac = mac_of("neighbour")
    assert fdb_ports(box.host, neighbour_mac) == {box.taps["neighbour"]: "static"}
    forged = [f"Ether(dst='33:33:00:00:00:01', src='{neighbour_mac}')/IPv6(src='{link_local_of('attacker')}', "
              "dst='ff02::1')/UDP(sport=40000, dport=40000)/Raw(b'UNCLOUD-FORGED-SOURCE')",
              f"Ether(dst='{mac_of('third')}', src='{neighbour_mac}')/IPv6(src='{address_of('attacker')}', "
              f"dst='{address_of('third')}')/UDP(sport=40000, dport=40000)/Raw(b'UNCLOUD-FORGED-SOURCE')"]
    to_neighbour = scapy_frames(
        f"Ether(dst='{neighbour_mac}', src='{mac_of('third')}')/IPv6(src='{address_of('third')}', "
        f"dst='{address_of('neighbour')}')/UDP(sport=40000, dport=40000)/Raw(b'UNCLOUD-FOR-THE-NEIGHBOUR')")
    stolen = box.attacker.sniff(seconds=10)
    box.attacker.send(*forged)
    assert fdb_ports(box.host, neighbour_mac) == {box.taps["neighbour"]: "static"}
    # The sniffer still runs: the third guest now sends to the neighbour's MAC.
    neighbour = listen(box, "neighbour", seconds=3)
    received_frames(start_tap_io(box.host, box.taps["third"], seconds=1, frames=to_neighbour * 3))
    assert not carries(sniffed(stolen), b"UNCLOUD-FOR-THE-NEIGHBOUR")
    assert carries(heard(neighbour)["neighbour"], b"UNCLOUD-FOR-THE-NEIGHBOUR")
    assert box.guard_counters("attacker")["spoofed-mac"] >= len(forged)
    assert fdb_ports(box.host, neighbour_mac) == {box.taps["neighbour"]: "static"}


def test_ipv4_and_arp_from_a_guest_go_nowhere(box):
    # A host with IPv4 on a bridge (left there by hand) must not answer a guest either.
    box.host.run(["ip", "addr", "add", "192.0.2.1/24", "dev", "br100"])
    attacker_mac = mac_of("attacker")
    frames = {
        "arp": [f"Ether(dst='ff:ff:ff:ff:ff:ff', src='{attacker_mac}')/ARP(op=1, hwsrc='{attacker_mac}', "
                "psrc='192.0.2.10', pdst='192.0.2.1')"],
        "ipv4": [f"Ether(dst='ff:ff:ff:ff:ff:ff', src='{attacker_mac}')/IP(src='192.0.2.99', dst='255.255.255.255')"
                 "/UDP(sport=40000, dport=40000)/Raw(b'UNCLOUD-IPV4')",
                 f"Ether(dst='{mac_of('neighbour')}', src='{attacker_mac}')/IP(src='192.0.2.10', dst='192.0.2.20')"
                 "/UDP(sport=40000, dport=40000)/Raw(b'UNCLOUD-IPV4')",
                 f"Ether(dst='{ROUTER_MAC_A}', src='{attacker_mac}')/IP(src='192.0.2.10', dst='192.0.2.1')/ICMP()"],
        # A DHCPv4 offer from a source port other than 67.
        "dhcpv4-server": [f"Ether(dst='ff:ff:ff:ff:ff:ff', src='{attacker_mac}')/IP(src='192.0.2.1', "
                          "dst='255.255.255.255')/UDP(sport=1067, dport=68)/BOOTP(op=2, yiaddr='192.0.2.50')"
                          "/DHCP(options=[('message-type', 'offer'), 'end'])"],
    }
    listeners = listen(box, "neighbour", "third")
    replies = box.attacker.sniff(seconds=8)
    sent = box.attacker.send(*(expression for expressions in frames.values() for expression in expressions))
    at = heard(listeners)
    for frame in sent:
        assert frame not in at["neighbour"] and frame not in at["third"]
    answers = [frame for frame in sniffed(replies) if frame[6:12] != bytes.fromhex(attacker_mac.replace(":", ""))]
    assert not [frame for frame in answers if frame[12:14] in (b"\x08\x06", b"\x08\x00")], answers
    counters = box.guard_counters("attacker")
    for reason, expressions in frames.items():
        assert counters[reason] >= len(expressions), (reason, counters)


def test_multicast_meets_the_receiving_guests_firewall(box):
    """An LLMNR query (UDP 5355 to ff02::1:3) to a guest whose firewall opens only UDP 40000."""
    attacker_mac, attacker_address = mac_of("attacker"), address_of("attacker")
    llmnr = (f"Ether(dst='33:33:00:01:00:03', src='{attacker_mac}')/IPv6(src='{attacker_address}', dst='ff02::1:3')"
             "/UDP(sport=5355, dport=5355)/LLMNRQuery(qd=DNSQR(qname='fileserver'))")
    opened = (f"Ether(dst='33:33:00:00:00:01', src='{attacker_mac}')/IPv6(src='{attacker_address}', dst='ff02::1')"
              "/UDP(sport=40000, dport=40000)/Raw(b'UNCLOUD-OPEN-PORT')")
    listeners = listen(box, "neighbour")
    query, allowed = box.attacker.send(llmnr, opened)
    at = heard(listeners)["neighbour"]
    assert allowed in at and query not in at
    assert nft_counters(box.host, f"multicast_{box.taps['neighbour']}")["security-group-multicast"] >= 1


def test_a_fragmented_router_advertisement_is_dropped(box):
    """RFC 6980: ND in fragments. A whole fragmented RA, the first fragment of another alone (it
    never completes), and an atomic fragment (one fragment holding the whole RA, RFC 6946).
    Here br_netfilter's conntrack reassembles (or holds) fragments before the bridge hooks run, so
    the guard meets whole RAs (counted as router-advert); the fragmented-icmpv6 rule is for
    fragments that reach it unassembled. Either way nothing arrives and a guard counter rises."""
    to_all = f"Ether(dst='33:33:00:00:00:01', src='{mac_of('attacker')}')"
    header = f"IPv6(src='{link_local_of('attacker')}', dst='ff02::1', hlim=255)"
    advert = ("ICMPv6ND_RA(routerlifetime=1800)/ICMPv6NDOptPrefixInfo(prefix='2001:db8:bad::', prefixlen=64)"
              "/ICMPv6NDOptRDNSS(lifetime=600, dns=['2001:db8:bad::' + str(i) for i in range(1, 40)])")
    expressions = [
        f"[{to_all}/fragment for fragment in fragment6({header}/IPv6ExtHdrFragment(id=1)/{advert}, 400)]",
        f"{to_all}/fragment6({header}/IPv6ExtHdrFragment(id=2)/{advert}, 400)[0]",
        f"{to_all}/{header}/IPv6ExtHdrFragment(id=3, offset=0, m=0)/ICMPv6ND_RA(routerlifetime=1800)"
        "/ICMPv6NDOptPrefixInfo(prefix='2001:db8:bad::', prefixlen=64)",
    ]
    listeners = listen(box, "neighbour", "third")
    sent = box.attacker.send(*expressions)
    assert len(sent) >= 4
    at = heard(listeners)
    for frame in sent:
        assert frame not in at["neighbour"] and frame not in at["third"]
    assert not carries(at["neighbour"] + at["third"], bytes.fromhex("20010db80bad"))
    counters = box.guard_counters("attacker")
    assert counters["fragmented-icmpv6"] + counters["router-advert"] >= 2, counters


FETCH_SCRIPT = """
import socket, sys
with socket.create_connection(('fe80::a9fe:a9fe%eth0', 80), timeout=10) as connection:
    connection.sendall(b'GET /openstack/latest/meta_data.json HTTP/1.0\\r\\n\\r\\n')
    answer = b''
    while chunk := connection.recv(65536):
        answer += chunk
sys.stdout.write(answer.decode())
"""
HOLD_SCRIPT = """
import socket, sys, time
count, hold_s = int(sys.argv[1]), float(sys.argv[2])
sockets = []
for _ in range(count):
    connection = socket.create_connection(('fe80::a9fe:a9fe%eth0', 80), timeout=5)
    connection.sendall(b'GET /openstack/latest/meta_data.json HTTP/1.0\\r\\n')
    connection.setblocking(False)
    sockets.append(connection)
print('held', len(sockets), flush=True)
closed = set()
deadline = time.monotonic() + hold_s
while time.monotonic() < deadline and len(closed) < len(sockets):
    for index, connection in enumerate(sockets):
        if index in closed:
            continue
        try:
            if connection.recv(4096) == b'':
                closed.add(index)
                continue
        except BlockingIOError:
            pass
        except OSError:
            closed.add(index)
            continue
        try:
            connection.send(b'X')  # a byte now and then: slow, never finished
        except OSError:
            closed.add(index)
    time.sleep(0.5)
print('closed', len(closed), flush=True)
"""


def test_slow_metadata_connections_do_not_starve_other_guests(box):
    host = box.host
    ok(host, "metadata-up")
    for name in ("attacker", "neighbour"):
        ok(host, "vm-metadata", uuid=GUESTS[name][0], hostname=name, name=name,
           ssh_keys=[{"name": "laptop", "public_key": KEYS[name]}], user_data=f"#cloud-config\n# {name}\n")
    neighbour = HostileGuest(host, box.taps["neighbour"], mac_of("neighbour"), address_of("neighbour"), 100)
    try:
        slow = box.attacker.start(["ip", "netns", "exec", box.attacker.netns, "/usr/bin/python3", "-c",
                                   HOLD_SCRIPT, "64", "40"])
        assert slow.stdout.readline().split() == ["held", "64"]
        fetched = neighbour.run([PYTHON, "-c", FETCH_SCRIPT], check=False)
        assert fetched.returncode == 0, fetched
        head, _, body = fetched.stdout.partition("\n\n")  # text mode made CRLF LF
        assert head.startswith("HTTP/1.0 200"), fetched.stdout
        document = json.loads(body)
        assert document["uuid"] == GUESTS["neighbour"][0]
        assert list(document["public_keys"].values()) == [KEYS["neighbour"]]
        # The service closed every slow connection: beyond a few at once, and the rest in time.
        output, errors = slow.communicate(timeout=90)
        assert output.split()[-2:] == ["closed", "64"], (output, errors)
    finally:
        neighbour.close()
