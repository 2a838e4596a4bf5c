"""Reading links, addresses and nft tables straight from the kernel over netlink (stdlib only).

`ip -j` and `nft list` each cost a process (a millisecond or two on a busy host); net-up's check
of a network that is already up reads the same facts here in microseconds. Read-only: every change
still goes through `ip` and `nft`. Only the fields net-up reads are decoded, in the shape `ip -j -d
link show` gives them, so one predicate (e.g. net.vxlan_matches) judges both."""

import errno
import ipaddress
import os
import socket
import struct

NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 18, 20, 22
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO = 1, 3, 4, 10, 18
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_VXLAN_ID, IFLA_VXLAN_LINK, IFLA_VXLAN_TTL, IFLA_VXLAN_PORT = 1, 3, 5, 15
IFLA_VXLAN_GROUP6, IFLA_VXLAN_LOCAL6 = 16, 17
IFLA_BR_MCAST_SNOOPING, IFLA_BR_NF_CALL_IP6TABLES = 23, 37
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 0x1
RT_SCOPE_UNIVERSE = 0
NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE, NFTA_TABLE_NAME = 10, 0, 1, 1
NFPROTO_INET, NFPROTO_BRIDGE = 1, 7
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
NFT_FAMILIES = {"inet": NFPROTO_INET, "bridge": NFPROTO_BRIDGE}


class NetlinkError(Exception):
    """The kernel answered something this reader does not understand: the caller must not trust
    its own check and takes the slow path instead."""


def attribute(attribute_type, payload):
    length = 4 + len(payload)
    return struct.pack("=HH", length, attribute_type) + payload + b"\0" * (-length % 4)


def parse_attributes(data):
    attributes, offset = {}, 0
    while offset + 4 <= len(data):
        length, attribute_type = struct.unpack_from("=HH", data, offset)
        if length < 4:
            raise NetlinkError("attribute shorter than its header")
        attributes[attribute_type & NLA_TYPE_MASK] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    return attributes


def request(protocol, message_type, flags, body):
    """The payloads (type, bytes) of the kernel's answer, up to DONE (a dump) or the one answer.
    An error answer raises OSError with the kernel's errno."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol) as sock:
        sock.bind((0, 0))
        sequence = 1
        sock.send(struct.pack("=IHHII", 16 + len(body), message_type, NLM_F_REQUEST | flags, sequence, 0) + body)
        answers = []
        while True:
            data = sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, answer_type, _, answer_sequence, _ = struct.unpack_from("=IHHII", data, offset)
                if length < 16:
                    raise NetlinkError("message shorter than its header")
                payload = data[offset + 16:offset + length]
                offset += (length + 3) & ~3
                if answer_sequence != sequence:
                    continue
                if answer_type == NLMSG_DONE:
                    return answers
                if answer_type == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    return answers  # the ACK after the answer
                answers.append((answer_type, payload))
                if not flags & (NLM_F_DUMP | NLM_F_ACK):
                    return answers


def u8(data):
    return struct.unpack("=B", data[:1])[0]


def u32(data):
    return struct.unpack("=I", data[:4])[0]


def index_name(index):
    try:
        return socket.if_indextoname(index)
    except OSError:
        return None


def link_info(name):
    """The link `name` like `ip -j -d link show dev NAME` shows it (ifname, ifindex, flags "UP", mtu,
    address, master, linkinfo of a vxlan or a bridge), or None when it does not exist."""
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0) + attribute(IFLA_IFNAME, name.encode() + b"\0")
    try:
        answers = request(NETLINK_ROUTE, RTM_GETLINK, 0, body)
    except OSError as error:
        if error.errno == errno.ENODEV:
            return None
        raise
    if len(answers) != 1 or answers[0][0] != RTM_NEWLINK:
        raise NetlinkError(f"unexpected answer to RTM_GETLINK {name}")
    payload = answers[0][1]
    _, _, index, flags, _ = struct.unpack_from("=BxHiII", payload)
    attributes = parse_attributes(payload[16:])
    link = {"ifname": attributes.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(), "ifindex": index,
            "flags": ["UP"] if flags & IFF_UP else [], "mtu": u32(attributes[IFLA_MTU])}
    if IFLA_ADDRESS in attributes:
        link["address"] = ":".join(f"{octet:02x}" for octet in attributes[IFLA_ADDRESS])
    if IFLA_MASTER in attributes:
        link["master"] = index_name(u32(attributes[IFLA_MASTER]))
    if IFLA_LINKINFO in attributes:
        link["linkinfo"] = parse_linkinfo(parse_attributes(attributes[IFLA_LINKINFO]))
    return link


def parse_linkinfo(info):
    kind = info.get(IFLA_INFO_KIND, b"").rstrip(b"\0").decode()
    data = parse_attributes(info.get(IFLA_INFO_DATA, b""))
    decoded = {}
    if kind == "vxlan":
        if IFLA_VXLAN_ID in data:
            decoded["id"] = u32(data[IFLA_VXLAN_ID])
        if IFLA_VXLAN_GROUP6 in data:
            decoded["group6"] = str(ipaddress.IPv6Address(data[IFLA_VXLAN_GROUP6]))
        if IFLA_VXLAN_LOCAL6 in data:
            decoded["local6"] = str(ipaddress.IPv6Address(data[IFLA_VXLAN_LOCAL6]))
        if IFLA_VXLAN_LINK in data:
            decoded["link"] = index_name(u32(data[IFLA_VXLAN_LINK]))
        if IFLA_VXLAN_PORT in data:
            decoded["port"] = struct.unpack("!H", data[IFLA_VXLAN_PORT][:2])[0]
        if IFLA_VXLAN_TTL in data:
            decoded["ttl"] = u8(data[IFLA_VXLAN_TTL])
    elif kind == "bridge":
        if IFLA_BR_MCAST_SNOOPING in data:
            decoded["mcast_snooping"] = u8(data[IFLA_BR_MCAST_SNOOPING])
        if IFLA_BR_NF_CALL_IP6TABLES in data:
            decoded["nf_call_ip6tables"] = u8(data[IFLA_BR_NF_CALL_IP6TABLES])
    return {"info_kind": kind, "info_data": decoded}


def global_ipv6_addresses(index):
    """[(address, prefix length)] of global scope on the link, in the kernel's order (the order
    `ip -6 addr show dev X scope global` prints them: the newest first)."""
    body = struct.pack("=BBBBI", socket.AF_INET6, 0, 0, 0, 0)
    found = []
    for answer_type, payload in request(NETLINK_ROUTE, RTM_GETADDR, NLM_F_DUMP, body):
        if answer_type != RTM_NEWADDR:
            continue
        family, prefixlen, _, scope, address_index = struct.unpack_from("=BBBBI", payload)
        if family != socket.AF_INET6 or address_index != index or scope != RT_SCOPE_UNIVERSE:
            continue
        attributes = parse_attributes(payload[8:])
        raw = attributes.get(IFA_LOCAL, attributes.get(IFA_ADDRESS))
        if raw is None:
            raise NetlinkError("an address without IFA_ADDRESS")
        found.append((str(ipaddress.IPv6Address(raw)), prefixlen))
    return found


def nft_table_exists(family, name):
    """Whether the nftables table exists in this network namespace (what `nft list table` asks)."""
    body = struct.pack("=BBH", NFT_FAMILIES[family], 0, 0) + attribute(NFTA_TABLE_NAME, name.encode() + b"\0")
    try:
        answers = request(NETLINK_NETFILTER, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE, NLM_F_ACK, body)
    except OSError as error:
        if error.errno == errno.ENOENT:
            return False
        raise
    return any(answer_type == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE for answer_type, _ in answers)
