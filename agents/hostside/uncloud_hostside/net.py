"""net-up / net-down: one VXLAN over IPv6 multicast and one bridge per customer network, radvd on it."""

import ipaddress
import os
import shutil
import time

from . import netlink
from .addressing import VXLAN_PORT, VXLAN_TTL, bridge_name, link_local_address, router_mac, vxlan_group, vxlan_name
from .checks import (
    check_bool,
    check_domain,
    check_fields,
    check_int,
    check_interface_name,
    check_ipv6_address,
    check_list,
    check_prefix64,
    check_state_dir,
    check_vni,
)
from .errors import HostsideError, bad_spec
from .netlink import NetlinkError
from .nft import apply_ruleset, ruleset_in_place
from .paths import network_dir, network_state_path, radvd_paths
from .state import (
    ensure_directory,
    host_lock,
    owned_process,
    read_json_file,
    read_text,
    remove_file,
    stop_process,
    tail_of_file,
    write_file_atomically,
    write_json_file,
)
from .system import ip_json, link_info, link_kind, require_binaries, run_command, write_interface_sysctl

RADVD_RDNSS_LIFETIME_S = 600
DEFAULT_ROUTER_LIFETIME_S = 1800


def parse_net_up_spec(spec):
    check_fields(spec, ["state_dir", "vni", "prefix", "underlay_device"],
                 ["dns_servers", "dns_search", "mtu", "default_router", "routes", "underlay_address"])
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
        "underlay_address": None if spec.get("underlay_address") is None
        else str(check_unicast_address(spec["underlay_address"], "underlay_address")),
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
    via = check_unicast_address(route["via"], f"{field}.via")
    return {"prefix": str(prefix), "via": str(via)}


def check_unicast_address(value, field):
    address = check_ipv6_address(value, field)
    if address.is_multicast or address.is_unspecified or address.is_loopback:
        raise bad_spec(f"{field} must be a unicast address")
    return address


def underlay_addressing(underlay_device, wanted=None):
    """(source address, on-link prefixes) of the underlay. The VXLAN devices send from the address
    the control plane names (it must be on the underlay device), else from the device's first global
    address, else from none (a lone host with no peers: the device binding and the input filter
    still keep VXLAN to the underlay). Guests are never routed into the prefixes: other hosts accept
    VXLAN and SSH from there."""
    infos = [info for link in ip_json("-6", "addr", "show", "dev", underlay_device, "scope", "global") or []
             for info in link.get("addr_info", []) if info.get("local")]
    choice = choose_underlay_address([(info["local"], info.get("prefixlen", 128)) for info in infos], wanted)
    if choice is None:
        raise HostsideError("not_found", f"underlay address {wanted} is not on {underlay_device}")
    return choice


def choose_underlay_address(addresses, wanted):
    """(source address, on-link prefixes) from the device's global [(address, prefix length)] in
    the kernel's order, or None when the wanted address is not among them."""
    prefixes = sorted({str(ipaddress.IPv6Network(f"{address}/{prefixlen}", strict=False))
                       for address, prefixlen in addresses})
    if wanted is not None and wanted not in [address for address, _ in addresses]:
        return None
    return wanted or (addresses[0][0] if addresses else None), prefixes


def ensure_underlay_routes(routes, underlay_device, changes):
    wanted = [f"route replace {route['prefix']} via {route['via']} dev {underlay_device}"
              for route in routes]
    if wanted:
        run_command(["ip", "-6", "-batch", "-"], input_text="\n".join(wanted) + "\n")
        changes.append(f"routes {', '.join(route['prefix'] for route in routes)}")


def vxlan_matches(link, vni, underlay_device, local_address):
    data = link.get("linkinfo", {}).get("info_data", {})
    return (link_kind(link) == "vxlan" and data.get("id") == vni
            and data.get("group6") == str(vxlan_group(vni)) and data.get("link") == underlay_device
            and data.get("local6") == local_address
            and data.get("port") == VXLAN_PORT and data.get("ttl") == VXLAN_TTL)


def ensure_vxlan(vni, underlay_device, changes, local_address=None):
    """The network's VXLAN, bound to the underlay device and sending from its address. (The kernel's
    VXLAN socket still listens on every address: the input filter, see towards_host, is what keeps
    VXLAN from anywhere but the underlay device.)"""
    name = vxlan_name(vni)
    link = link_info(name)
    if link is not None and vxlan_matches(link, vni, underlay_device, local_address):
        return
    if link is not None:
        run_command(["ip", "link", "del", "dev", name])
        changes.append(f"replaced {name}")
    else:
        changes.append(f"created {name}")
    local = ["local", local_address] if local_address else []
    run_command(["ip", "-6", "link", "add", name, "type", "vxlan", "id", str(vni), "dstport",
                 str(VXLAN_PORT), *local, "group", str(vxlan_group(vni)), "dev", underlay_device,
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
    for key in BRIDGE_SYSCTLS:
        write_interface_sysctl(name, key, 0)
    wanted_mac = router_mac(vni)
    if link.get("address") != wanted_mac:
        run_command(["ip", "link", "set", "dev", name, "address", wanted_mac])
        changes.append(f"set {name} address")
    # No multicast snooping: every multicast frame is flooded to every port of this small bridge,
    # which keeps neighbour discovery across the VXLAN independent of MLD state. IPv6 crossing the
    # bridge also passes the inet hooks, where the security groups' connection tracking lives.
    if not bridge_settings_match(link):
        run_command(["ip", "link", "set", "dev", name, "type", "bridge", "mcast_snooping", "0",
                     "nf_call_ip6tables", "1"])


def bridge_settings_match(link):
    info = link.get("linkinfo", {}).get("info_data", {})
    return info.get("mcast_snooping") == 0 and info.get("nf_call_ip6tables") == 1


BRIDGE_SYSCTLS = ("accept_dad", "accept_ra", "autoconf")


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


IPV6_FORWARDING = "/proc/sys/net/ipv6/conf/all/forwarding"


def ensure_ipv6_forwarding():
    # radvd only advertises when the host forwards IPv6.
    if read_text(IPV6_FORWARDING).strip() != "1":
        with open(IPV6_FORWARDING, "w") as handle:
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


def network_state_of(net, underlay_address, underlay_prefixes, mtu):
    """What network.json records of a network that is up (vm-up, nft and inventory read it)."""
    vni = net["vni"]
    return {
        "vni": vni, "prefix": str(net["prefix"]), "underlay_device": net["underlay_device"],
        "underlay_address": underlay_address, "underlay_prefixes": underlay_prefixes,
        "vxlan": vxlan_name(vni), "bridge": bridge_name(vni), "group": str(vxlan_group(vni)),
        "router_mac": router_mac(vni), "mtu": mtu,
        "router_link_local": str(link_local_address(router_mac(vni))),
        "dns_servers": net["dns_servers"], "dns_search": net["dns_search"],
    }


def radvd_config_of(net, mtu):
    return render_radvd_config(bridge_name(net["vni"]), net["prefix"], mtu, net["dns_servers"],
                               net["dns_search"], net["default_router"])


def verb_net_up(spec):
    net = parse_net_up_spec(spec)
    require_binaries("ip", "nft", "radvd")
    with host_lock(net["state_dir"]):
        # Every create on a host asks again for a network that is nearly always up already.
        answer = answer_if_already_up(net)
        if answer is not None:
            return answer
        return bring_network_up(net)


def bring_network_up(net):
    """Each part made as the spec asks (each ensure_* changes only what differs). Under the host lock."""
    state_dir, vni = net["state_dir"], net["vni"]
    if link_info(net["underlay_device"]) is None:
        raise HostsideError("not_found", f"underlay device {net['underlay_device']} does not exist")
    changes = []
    ensure_directory(network_dir(state_dir, vni))
    underlay_address, underlay_prefixes = underlay_addressing(net["underlay_device"], net["underlay_address"])
    ensure_vxlan(vni, net["underlay_device"], changes, underlay_address)
    ensure_bridge(vni, changes)
    ensure_port_of_bridge(vxlan_name(vni), bridge_name(vni), changes, mtu=net["mtu"])
    ensure_link_up(bridge_name(vni))
    mtu = link_info(vxlan_name(vni))["mtu"]
    ensure_ipv6_forwarding()
    network_state = network_state_of(net, underlay_address, underlay_prefixes, mtu)
    write_json_file(network_state_path(state_dir, vni), network_state)
    if apply_ruleset(state_dir):
        changes.append("applied nft rules")
    # The host routes to its own guests on this bridge (inbound traffic, NAT64 replies).
    run_command(["ip", "-6", "route", "replace", str(net["prefix"]), "dev", bridge_name(vni)])
    ensure_underlay_routes(net["routes"], net["underlay_device"], changes)
    radvd_pid = ensure_radvd(state_dir, vni, radvd_config_of(net, mtu), changes)
    return {**network_state, "radvd_pid": radvd_pid, "changes": changes}


# `ip -6 route replace` without a metric makes a route of this metric (IP6_RT_PRIO_USER).
USER_ROUTE_METRIC = 1024
RTF_UP, RTF_REJECT = 0x0001, 0x0200


def kernel_ipv6_routes():
    """{(prefix, next hop, metric, device)} of the usable IPv6 routes, from /proc/net/ipv6_route
    (the network namespace this program runs in)."""
    routes = set()
    for line in (read_text("/proc/net/ipv6_route") or "").splitlines():
        fields = line.split()
        if len(fields) != 10 or not int(fields[8], 16) & RTF_UP or int(fields[8], 16) & RTF_REJECT:
            continue
        destination = ipaddress.IPv6Address(int(fields[0], 16))
        routes.add((f"{destination}/{int(fields[1], 16)}", str(ipaddress.IPv6Address(int(fields[4], 16))),
                    int(fields[5], 16), fields[9]))
    return routes


def answer_if_already_up(net):
    """net-up's answer when the network is already exactly as the spec asks, else None (then the
    full bring_network_up runs). Spawns no process: links and addresses come over netlink, routes
    from /proc, settings from /proc/sys, radvd from its pid file and /proc; the state files are
    compared with what this spec would write. Everything bring_network_up would change is looked
    at here, in the real state, so a record alone is never trusted: a deleted link, a dead radvd,
    a lost route, a flushed nft table or a changed spec (prefix, mtu, dns, routes, default_router,
    underlay) each send net-up down the full path. Under the host lock, like the full path: the
    state files it compares are written under it, and the next verbs of a boot batch (metadata-up,
    vm-up) take the lock anyway, so a lock-free check would only move the wait."""
    try:
        return already_up_answer(net)
    except (OSError, NetlinkError):
        return None  # not provably up: the full path finds out and reports what is wrong


def already_up_answer(net):
    state_dir, vni = net["state_dir"], net["vni"]
    bridge, vxlan = bridge_name(vni), vxlan_name(vni)
    underlay = netlink.link_info(net["underlay_device"])
    if underlay is None:
        return None
    choice = choose_underlay_address(netlink.global_ipv6_addresses(underlay["ifindex"]), net["underlay_address"])
    if choice is None:
        return None
    underlay_address, underlay_prefixes = choice
    vxlan_link, bridge_link = netlink.link_info(vxlan), netlink.link_info(bridge)
    if vxlan_link is None or bridge_link is None:
        return None
    if not vxlan_matches(vxlan_link, vni, net["underlay_device"], underlay_address) \
            or vxlan_link.get("master") != bridge or "UP" not in vxlan_link["flags"] \
            or (net["mtu"] is not None and vxlan_link["mtu"] != net["mtu"]):
        return None
    if link_kind(bridge_link) != "bridge" or bridge_link.get("address") != router_mac(vni) \
            or not bridge_settings_match(bridge_link) or "UP" not in bridge_link["flags"]:
        return None
    if any(read_text(f"/proc/sys/net/ipv6/conf/{bridge}/{key}") != "0\n" for key in BRIDGE_SYSCTLS) \
            or read_text(IPV6_FORWARDING) != "1\n":
        return None
    network_state = network_state_of(net, underlay_address, underlay_prefixes, vxlan_link["mtu"])
    if read_json_file(network_state_path(state_dir, vni)) != network_state or not ruleset_in_place(state_dir):
        return None
    wanted_routes = {(str(net["prefix"]), "::", USER_ROUTE_METRIC, bridge)} | {
        (route["prefix"], route["via"], USER_ROUTE_METRIC, net["underlay_device"]) for route in net["routes"]}
    if not wanted_routes <= kernel_ipv6_routes():
        return None
    radvd_pid = running_radvd(state_dir, vni)
    if radvd_pid is None or read_text(radvd_paths(state_dir, vni)["config"]) != radvd_config_of(net, vxlan_link["mtu"]):
        return None
    return {**network_state, "radvd_pid": radvd_pid, "changes": []}


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
