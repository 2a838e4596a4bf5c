"""A VM's spec checked field by field and turned into qemu's command line.

Every NIC sits on a PCIe root port of its own, and spare ports wait for disks, so both can be
plugged into and out of a running guest (q35's root bus pcie.0 takes no hot-plug).
"""

import ipaddress

from .addressing import derived_tap_name, eui64_interface_id, link_local_address
from .checks import (
    CMDLINE_RE,
    RESERVED_INTERFACE_PREFIXES,
    TAP_NAME_RE,
    VM_NAME_RE,
    check_bool,
    check_fields,
    check_int,
    check_ipv6_address,
    check_list,
    check_mac,
    check_path_under,
    check_state_dir,
    check_string,
    check_uuid,
    check_vni,
)
from .errors import bad_spec
from .kvm import kvm_probe_cached
from .nft import parse_ingress_rules
from .paths import network_state_path, vm_paths
from .rbd import parse_rbd_disk
from .state import read_json_file
from .system import QEMU_BINARY

MAX_GENERATION = 2**62

# Every NIC sits on a PCIe root port of its own, and spare ports wait for disks, so both can be
# plugged into and out of a running guest (q35's root bus pcie.0 takes no hot-plug).
MAX_NICS = 8
MAX_HOTPLUG_DISKS = 8


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
    return read_json_file(network_state_path(state_dir, vni))


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
                 ["kernel", "initrd", "cmdline", "accel", "generation", "paused"])
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
        # The start's generation (HA, see ha.py): a host refuses an older one and kills a copy it outlived.
        "generation": None if spec.get("generation") is None
        else check_int(spec["generation"], "generation", 0, MAX_GENERATION),
        # Started but never run (a stopped VM's cold move sends it paused to another host).
        "paused": check_bool(spec.get("paused", False), "paused"),
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
            # password=on: no VNC client gets in until the console gateway sets a one-time
            # password through QMP (console.py); the socket alone is not the key.
            "-vnc", f"unix:{paths['vnc']},password=on",
            "-qmp", f"unix:{paths['qmp']},server=on,wait=off",
            # The serial line is a socket for the console and still a log file (the boot log).
            "-chardev", f"socket,id=serial0,path={paths['tty']},server=on,wait=off,logfile={paths['serial']}",
            "-serial", "chardev:serial0",
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
