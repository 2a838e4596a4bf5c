"""inventory: what runs on this host, for the control plane's reconciler."""

import os
import re

from .checks import check_fields, check_state_dir
from .guests import processes_under_state_dir, vm_status
from .net import running_radvd
from .nft import NFT_FAMILY, NFT_TABLE, load_network_states, load_port_states, nft_table_chains
from .paths import vm_paths, vms_dir
from .state import parent_pid, read_json_file
from .system import ip_json, link_kind, require_binaries


def inventory_vms(state_dir):
    directory = vms_dir(state_dir)
    if not os.path.isdir(directory):
        return []
    vms = []
    for entry in sorted(os.listdir(directory)):
        recorded = read_json_file(vm_paths(state_dir, entry)["spec"])
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
