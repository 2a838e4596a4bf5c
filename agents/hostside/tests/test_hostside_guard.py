"""Guest ports are guarded: a guest can only speak as itself, never as a router or DHCP server.

The guests here are the VMs' own taps, made by vm-up, but driven by tests/tap_io.py instead of
qemu: after vm-up the test SIGKILLs the qemu (as if it had crashed), which leaves the tap, its
bridge port and its nft guard exactly as vm-up made them, and attaches to the tap the way qemu's
virtio-net backend does. So the frames enter the bridge precisely where a guest's frames would,
and the peers receive precisely what their guests would. Unlike a real guest, the test can write
any frame it likes: rogue router advertisements, DHCP replies, forged source MACs and addresses.
"""
import ipaddress
import time

from hostside_testlib import (
    BROADCAST_MAC,
    ethernet,
    eui64,
    inventory,
    ipv4_packet,
    ipv6_packet,
    ipv6_udp_frame,
    kill_and_wait,
    link_local,
    net_spec,
    nft_counters,
    nic,
    ok,
    received_frames,
    router_advertisement,
    start_tap_io,
    udp_datagram,
    vm_spec,
)

PREFIX = "2001:db8:200:1::/64"
SENDER_MAC, PEER_MAC, STRANGER_MAC = "02:00:00:bb:00:01", "02:00:00:bb:00:02", "02:00:00:bb:00:03"
SENDER_UUID = "7a000000-0000-4000-8000-000000000001"
PEER_UUID = "7a000000-0000-4000-8000-000000000002"
STRANGER_UUID = "7a000000-0000-4000-8000-000000000003"


def guest_frames():
    own_address, own_link_local = eui64(PREFIX, SENDER_MAC), link_local(SENDER_MAC)
    someone_else = ipaddress.IPv6Network(PREFIX).network_address + 0x99
    vlan_tagged = ipv6_udp_frame(SENDER_MAC, own_address, b"UNCLOUD-VLAN")
    vlan_tagged = vlan_tagged[:12] + bytes.fromhex("81000064") + vlan_tagged[12:]
    return {
        "good": ipv6_udp_frame(SENDER_MAC, own_address, b"UNCLOUD-GOOD"),
        "good-link-local": ipv6_udp_frame(SENDER_MAC, own_link_local, b"UNCLOUD-GOOD-LL"),
        "spoofed-mac": ipv6_udp_frame("02:00:00:bb:00:99", own_address, b"UNCLOUD-BAD-MAC"),
        "spoofed-ipv6": ipv6_udp_frame(SENDER_MAC, someone_else, b"UNCLOUD-BAD-IP6"),
        "router-advert": ethernet("33:33:00:00:00:01", SENDER_MAC, 0x86DD, ipv6_packet(
            own_link_local, "ff02::1", 58, router_advertisement("2001:db8:bad::/64"),
            hop_limit=255)),
        "dhcpv6-server": ethernet("33:33:00:00:00:01", SENDER_MAC, 0x86DD, ipv6_packet(
            own_link_local, "ff02::1", 17, udp_datagram(547, 546, b"UNCLOUD-DHCPV6-REPLY"))),
        "dhcpv4-server": ethernet(BROADCAST_MAC, SENDER_MAC, 0x0800, ipv4_packet(
            "192.0.2.1", "255.255.255.255", 17, udp_datagram(67, 68, b"UNCLOUD-DHCPV4-REPLY"))),
        "bad-ethertype": vlan_tagged,
    }


# Multicast meets the receiving guest's firewall too: the guests here open the test's UDP port.
OPEN_TEST_PORT = [{"protocol": "udp", "port_min": 40000, "source": "::/0"}]


def start_vm_and_free_its_tap(host, vm_uuid, mac, vni):
    vm = ok(host, "vm-up", **vm_spec(vm_uuid, [nic(mac, vni, PREFIX, ingress=OPEN_TEST_PORT)]))
    kill_and_wait(vm["pid"])
    return vm["taps"][0]


def test_guest_ports_drop_rogue_frames_across_the_vxlan(hosts):
    sender_host, peer_host = hosts
    ok(sender_host, "net-up", **net_spec(100, PREFIX, sender_host))
    ok(peer_host, "net-up", **net_spec(100, PREFIX, peer_host))
    # Same /64 in another network: were the VXLANs leaky, its guest would hear everything.
    ok(peer_host, "net-up", **net_spec(200, PREFIX, peer_host))
    sender_tap = start_vm_and_free_its_tap(sender_host, SENDER_UUID, SENDER_MAC, 100)
    peer_tap = start_vm_and_free_its_tap(peer_host, PEER_UUID, PEER_MAC, 100)
    stranger_tap = start_vm_and_free_its_tap(peer_host, STRANGER_UUID, STRANGER_MAC, 200)

    frames = guest_frames()
    peer = start_tap_io(peer_host, peer_tap, seconds=4)
    stranger = start_tap_io(peer_host, stranger_tap, seconds=4)
    sender = start_tap_io(sender_host, sender_tap, seconds=1.5, frames=frames.values())
    received_frames(sender)
    at_peer, at_stranger = received_frames(peer), received_frames(stranger)

    assert frames["good"] in at_peer and frames["good-link-local"] in at_peer
    for reason in ("spoofed-mac", "spoofed-ipv6", "router-advert", "dhcpv6-server",
                   "dhcpv4-server", "bad-ethertype"):
        assert frames[reason] not in at_peer, reason
    assert not set(frames.values()) & set(at_stranger)
    # The peer's only router is its own host's: the sender host's RAs stay on the sender host.
    peer_sources = {frame[6:12].hex(":") for frame in at_peer}
    assert peer_sources <= {SENDER_MAC, "02:75:63:00:00:64"}, peer_sources

    counters = nft_counters(sender_host, f"guard_{sender_tap}")
    for reason in ("spoofed-mac", "spoofed-ipv6", "router-advert", "dhcpv6-server",
                   "dhcpv4-server", "bad-ethertype"):
        assert counters[reason] >= 1, (reason, counters)
    # radvd advertises every 3-10 s and a rebuilt rule set starts its counters at 0: wait for one.
    deadline = time.monotonic() + 15
    while nft_counters(sender_host, "router_stays_local")["router-local"] < 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert nft_counters(sender_host, "router_stays_local")["router-local"] >= 1

    for host, vm_uuid in ((sender_host, SENDER_UUID), (peer_host, PEER_UUID),
                          (peer_host, STRANGER_UUID)):
        ok(host, "vm-down", uuid=vm_uuid)
    for host in hosts:
        assert inventory(host)["taps"] == []


def test_repeating_a_verb_keeps_the_counters(hosts):
    """Rules are replaced only when they change, so evidence of an attack survives a re-run."""
    host = hosts[0]
    ok(host, "net-up", **net_spec(100, PREFIX, host))
    tap = start_vm_and_free_its_tap(host, SENDER_UUID, SENDER_MAC, 100)
    received_frames(start_tap_io(host, tap, seconds=0.2, frames=[guest_frames()["spoofed-mac"]]))
    dropped = nft_counters(host, f"guard_{tap}")["spoofed-mac"]
    assert dropped >= 1
    ok(host, "net-up", **net_spec(100, PREFIX, host))
    ok(host, "vm-up", **vm_spec(SENDER_UUID, [nic(SENDER_MAC, 100, PREFIX, ingress=OPEN_TEST_PORT)]))
    assert nft_counters(host, f"guard_{tap}")["spoofed-mac"] == dropped
    ok(host, "vm-down", uuid=SENDER_UUID, hard=True)
