"""host-down: every guest and network of this state dir down (bin/run --down on a demo machine)."""

import os

from .checks import check_bool, check_fields, check_interface_name, check_number, check_state_dir
from .exporter import verb_exporter_down
from .ha import ha_paths, running_guard
from .inventory import inventory_vms
from .metadata import verb_metadata_down
from .nat64 import remove_nat64_pool
from .net import verb_net_down
from .nft import NFT_FAMILY, NFT_TABLE, SG_FAMILY, SG_TABLE, load_network_states
from .paths import nat64_dir, port_state_path, ruleset_path
from .state import host_lock, remove_file, stop_process
from .system import require_binaries, run_command
from .vm import sysfs_link, verb_vm_down


def verb_host_down(spec):
    """Stop every guest of this state dir (ACPI powerdown, hard after timeout_s, or at once with
    hard), take every network down (radvd, bridge, VXLAN), stop the metadata service, the NAT64
    translators and the fence guard, and drop this program's nft tables. Disks, images and config drives stay: a later
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
    guard = running_guard(state_dir)
    if guard is not None:
        # The fence guard (the heartbeat starts it) has nothing left to guard; it would outlive bin/run.
        stop_process(guard, term_wait_s=2)
        remove_file(ha_paths(state_dir)["pid"])
        changes.append("stopped the fence guard")
    if verb_exporter_down({"state_dir": state_dir})["stopped"]:
        changes.append("stopped the metrics exporter")
    with host_lock(state_dir):
        if os.path.isdir(nat64_dir(state_dir)):
            for name in sorted(os.listdir(nat64_dir(state_dir))):
                if name.isdigit():
                    remove_nat64_pool(state_dir, int(name), underlay_device, changes)
        for family, table in ((NFT_FAMILY, NFT_TABLE), (SG_FAMILY, SG_TABLE)):
            if run_command(["nft", "list", "table", family, table], check=False).returncode == 0:
                run_command(["nft", "delete", "table", family, table])
                changes.append(f"deleted nft table {family} {table}")
        remove_file(ruleset_path(state_dir))
    return {"stopped_vms": stopped, "networks_down": networks, "changes": changes}
