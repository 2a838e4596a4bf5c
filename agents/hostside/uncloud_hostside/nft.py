"""nftables: the whole table is rebuilt from the files under state_dir on every change."""

import ipaddress
import json
import os

from .addressing import METADATA_ADDRESS, METADATA_PORT, VXLAN_PORT
from .checks import check_fields, check_int, check_list
from .errors import bad_spec
from .netlink import NetlinkError, nft_table_exists
from .paths import (
    metadata_server_paths,
    network_state_path,
    networks_dir,
    ports_dir,
    ruleset_candidate_path,
    ruleset_path,
)
from .state import read_json_file, read_text, write_file_atomically
from .system import run_command

NFT_FAMILY = "bridge"
NFT_TABLE = "uncloud"
SG_FAMILY = "inet"
SG_TABLE = "uncloud_sg"


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
    states = [read_json_file(network_state_path(state_dir, name))
              for name in sorted(os.listdir(directory), key=lambda name: (len(name), name))]
    return [state for state in states if state]


def nft_ipv6_integer(address):
    """An IPv6 address as the integer a raw payload match (@th,OFFSET,128) compares with."""
    return f"0x{int(ipaddress.IPv6Address(address)):032x}"


def render_guard_chain(port):
    """What a guest may send: frames from its own MAC, IPv6 from its own addresses, and neighbour
    discovery that only ever speaks for itself. Nothing else of IPv4/ARP has a purpose here (the
    product is IPv6-only towards guests; public IPv4 arrives translated by NAT64), so it is dropped
    on every network, which also closes IPv4 spoofing and ARP poisoning between guests."""
    tap, mac = port["tap"], port["mac"]
    own_addresses = [port["link_local"], port["ipv6"]]
    allowed_sources = ", ".join(["::", *own_addresses])
    own_targets = ", ".join(nft_ipv6_integer(address) for address in own_addresses)
    own_mac = "0x" + mac.replace(":", "")
    return [
        f"    chain guard_{tap} {{",
        f"        ether saddr != {mac} counter drop comment \"spoofed-mac\"",
        "        ether type arp counter drop comment \"arp\"",
        # Counted apart for the record: a DHCPv4 answer to the client port, whatever the source port.
        "        ether type ip @nh,72,8 17 @nh,176,16 68 counter drop comment \"dhcpv4-server\"",
        "        ether type ip counter drop comment \"ipv4\"",
        # 802.1Q-tagged frames too, which would otherwise slip past the ip6 matches.
        "        ether type != ip6 counter drop comment \"bad-ethertype\"",
        f"        ip6 saddr != {{ {allowed_sources} }} counter drop comment \"spoofed-ipv6\"",
        # RFC 6980: neighbour discovery never comes in fragments. A fragment whose next header is
        # ICMPv6, or an extension header that could hide ICMPv6 behind it, is dropped; the
        # guard's ICMPv6 matches below cannot see into fragments.
        "        frag nexthdr { 0, 43, 44, 58, 60 } counter drop comment \"fragmented-icmpv6\"",
        "        icmpv6 type nd-router-advert counter drop comment \"router-advert\"",
        "        icmpv6 type nd-redirect counter drop comment \"redirect\"",
        # A guest advertises only its own addresses (the target field, bytes 8-23 of the NA).
        f"        icmpv6 type nd-neighbor-advert @th,64,128 != {{ {own_targets} }} counter drop "
        "comment \"nd-foreign-target\"",
        # At most one option, at a fixed place, so the link-layer address in it can be checked:
        # RS (8 bytes) + source link-layer address; NS/NA (24 bytes) + source/target link-layer
        # address (or the nonce of a DAD probe, RFC 7527). Hosts ignore ND options they did not
        # expect, but a second link-layer option hidden behind another one would not be seen.
        "        icmpv6 type nd-router-solicit ip6 length > 16 counter drop comment \"nd-options\"",
        "        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 length > 32 counter drop "
        "comment \"nd-options\"",
        "        icmpv6 type nd-router-solicit ip6 length 16 @th,64,8 != 1 counter drop "
        "comment \"nd-options\"",
        "        icmpv6 type nd-neighbor-solicit ip6 length 32 @th,192,8 != { 1, 14 } counter drop "
        "comment \"nd-options\"",
        "        icmpv6 type nd-neighbor-advert ip6 length 32 @th,192,8 != 2 counter drop "
        "comment \"nd-options\"",
        f"        icmpv6 type nd-router-solicit @th,64,8 1 @th,80,48 != {own_mac} counter drop "
        "comment \"nd-foreign-lladdr\"",
        f"        icmpv6 type nd-neighbor-solicit @th,192,8 1 @th,208,48 != {own_mac} counter drop "
        "comment \"nd-foreign-lladdr\"",
        f"        icmpv6 type nd-neighbor-advert @th,192,8 2 @th,208,48 != {own_mac} counter drop "
        "comment \"nd-foreign-lladdr\"",
        "        udp sport 547 udp dport 546 counter drop comment \"dhcpv6-server\"",
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


def render_ingress_rule(rule, family=SG_FAMILY):
    match = [] if rule["source"] == "::/0" else [f"ip6 saddr {rule['source']}"]
    if rule["protocol"] == "any":
        # meta nfproto is the hook's family: in the bridge family the ethertype says IPv6.
        match.append("meta nfproto ipv6" if family == SG_FAMILY else "ether type ip6")
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


def render_multicast_chain(port):
    """Multicast towards a guest: the inet chains find a guest by its unicast address, so a frame
    to a group would pass them; here, on its way out of the bridge to the guest's port, it meets
    the guest's rules (stateless: multicast is never the answer of a connection)."""
    return [
        f"    chain multicast_{port['tap']} {{",
        "        meta l4proto ipv6-icmp accept",
        *(render_ingress_rule(rule, NFT_FAMILY) for rule in port.get("security_group_ingress", [])),
        "        counter drop comment \"security-group-multicast\"",
        "    }",
    ]


def render_ruleset(networks, ports, metadata_port=METADATA_PORT):
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
        if hook == "forward":
            for port in ports:
                lines.append(f"        oifname \"{port['tap']}\" ip6 daddr ff00::/8 jump multicast_{port['tap']}")
        lines.append("    }")
    for port in ports:
        lines += render_guard_chain(port)
        lines += render_multicast_chain(port)
    lines.append("}")
    lines += render_security_group_table(networks, ports, metadata_port)
    return "\n".join(lines) + "\n"


def render_security_group_table(networks, ports, metadata_port=METADATA_PORT):
    """Security groups need connection tracking, which the bridge family lacks on many kernels: the
    bridges hand IPv6 to the inet hooks (nf_call_ip6tables), where a guest is known by its addresses
    (anti-spoofing ties those to its port). Bridged and routed traffic meet the same chain, and so
    does what the host itself sends to a guest."""
    lines = [
        f"table {SG_FAMILY} {SG_TABLE}",
        f"delete table {SG_FAMILY} {SG_TABLE}",
        f"table {SG_FAMILY} {SG_TABLE} {{",
        "    chain towards_guests {",
        "        type filter hook forward priority 0; policy accept;",
    ]
    # Guests are routed to the outside, never into the underlay, where the hosts take VXLAN (and SSH)
    # from any address. Only their replies to connections a host opened get there (a proxy host's
    # HAProxy and jump sshd reach guests on other hosts from their underlay addresses).
    underlay_prefixes = sorted({prefix for network in networks for prefix in network.get("underlay_prefixes", [])})
    if underlay_prefixes:
        bridges = ", ".join(f"\"{network['bridge']}\"" for network in networks)
        lines.append(f"        iifname {{ {bridges} }} ip6 daddr {{ {', '.join(underlay_prefixes)} }} "
                     "ct state != established counter drop comment \"guest-to-underlay\"")
    # Networks are isolated from each other: this host routes between a network and the outside
    # (NAT64, the uplink), never from one customer network into another.
    for network in networks:
        lines.append(f"        iifname \"{network['bridge']}\" oifname \"br*\" oifname != \"{network['bridge']}\" "
                     "counter drop comment \"between-networks\"")
    targets = ", ".join(f"{address} : jump ingress_{port['tap']}"
                        for port in ports for address in (port["ipv6"], port["link_local"]))
    if ports:
        lines.append(f"        ip6 daddr vmap {{ {targets} }}")
    lines += [
        "    }",
        # The host is one more source for a guest's firewall: an empty rule set keeps it out too.
        "    chain host_to_guests {",
        "        type filter hook output priority 0; policy accept;",
    ]
    if ports:
        lines.append(f"        ip6 daddr vmap {{ {targets} }}")
    lines += [
        "    }",
        "    chain towards_host {",
        "        type filter hook input priority 0; policy accept;",
    ]
    if networks:
        # VXLAN is accepted from the underlay only: a guest that sends VXLAN to any of the host's
        # addresses (through its bridge, or routed) must not inject frames into any network.
        underlays = ", ".join(sorted({f"\"{network.get('underlay_device', '')}\"" for network in networks}))
        bridges = ", ".join(f"\"{network['bridge']}\"" for network in networks)
        lines += [
            f"        udp dport {VXLAN_PORT} iifname != {{ {underlays} }} counter drop comment \"vxlan-not-underlay\"",
            f"        iifname {{ {bridges} }} jump from_guests",
        ]
    lines += [
        "    }",
        # From a guest bridge the host is a router and a metadata service, nothing more.
        "    chain from_guests {",
        "        ct state established,related accept",
        "        icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, echo-request, "
        "mld-listener-report, mld2-listener-report } accept",
        f"        ip6 daddr {METADATA_ADDRESS} tcp dport {metadata_port} accept",
        "        counter drop comment \"guest-to-host\"",
        "    }",
    ]
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


def ruleset_of_state(state_dir):
    """The rule set the state files under state_dir ask for."""
    metadata_spec = read_json_file(metadata_server_paths(state_dir)["spec"]) or {}
    return render_ruleset(load_network_states(state_dir), load_port_states(state_dir),
                          metadata_spec.get("port", METADATA_PORT))


def tables_present():
    """Both of this program's tables exist in the kernel (asked over netlink: no `nft` process).
    Someone's `nft flush ruleset` leaves the applied file as it was: this is what notices. A reply
    the reader does not understand counts as absent: the rules are then applied once more."""
    try:
        return nft_table_exists(NFT_FAMILY, NFT_TABLE) and nft_table_exists(SG_FAMILY, SG_TABLE)
    except (OSError, NetlinkError):
        return False


def ruleset_in_place(state_dir, ruleset=None):
    """True when the rule set of the state files is the one last applied and its tables are there."""
    ruleset = ruleset_of_state(state_dir) if ruleset is None else ruleset
    return read_text(ruleset_path(state_dir)) == ruleset and tables_present()


def apply_ruleset(state_dir):
    """Rebuild the table from state files and swap it in one transaction. Skipped when nothing
    changed, so repeating a verb does not reset the counters. No `nft -c` first: `nft -f` sends
    the whole file as one netlink batch, which the kernel applies entirely or not at all (the old
    table stays, and the error is the one -c would give), so a check would only double the cost."""
    ruleset = ruleset_of_state(state_dir)
    applied_path = ruleset_path(state_dir)
    if ruleset_in_place(state_dir, ruleset):
        return False
    candidate_path = ruleset_candidate_path(state_dir)
    write_file_atomically(candidate_path, ruleset)
    run_command(["nft", "-f", candidate_path])
    os.replace(candidate_path, applied_path)
    return True
