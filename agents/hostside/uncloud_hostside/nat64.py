"""nat64-sync: public IPv4 addresses mapped 1:1 onto guests' IPv6 addresses (tayga)."""

import ipaddress
import os
import shutil
import time

from .checks import check_fields, check_int, check_interface_name, check_ipv6_address, check_list, check_state_dir
from .errors import HostsideError, bad_spec
from .guest_routes import claim_guest_routes
from .paths import nat64_dir, nat64_paths
from .state import (
    ensure_directory,
    host_lock,
    owned_process,
    read_json_file,
    read_text,
    remove_file,
    stop_process,
    write_file_atomically,
    write_json_file,
)
from .system import link_info, require_binaries, run_command


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


def render_tayga_config(pool):
    lines = [f"tun-device {pool['tun']}", f"ipv4-addr {pool['translator_address']}",
             f"prefix {pool['nat64_prefix']}"]
    lines += [f"map {entry['ipv4']} {entry['ipv6']}" for entry in pool["maps"]]
    return "\n".join(lines) + "\n"


def host_routes_of(maps):
    """/128 routes for mapped guests on other hosts; a guest here is reached on its bridge."""
    return sorted((entry["ipv6"], entry["via"]) for entry in maps if entry["via"])


def nat64_route_owner(pool_id):
    return f"nat64-pool-{pool_id}"


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
    claim_guest_routes(state_dir, nat64_route_owner(pool_id), [],
                       [address for address, _ in recorded.get("host_routes", [])], underlay_device, changes)
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
    claim_guest_routes(state_dir, nat64_route_owner(pool["id"]), wanted,
                       [address for address, _ in recorded.get("host_routes", [])], underlay_device, changes)
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
