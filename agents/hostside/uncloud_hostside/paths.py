"""The whole state-dir layout in one place.

    <state_dir>/networks/<vni>/                  network.json, radvd.conf/.pid/.log
    <state_dir>/ports/<tap>.json                 one guest port: MAC, addresses, firewall
    <state_dir>/vms/<uuid>/                      spec.json, qmp.sock, vnc.sock, tty.sock (serial), qemu.pid,
                                                 serial.log (the same serial line, kept as a log)
    <state_dir>/nat64/<pool>/                    tayga.conf, pid, state
    <state_dir>/images/<sha256>.qcow2            base images, verified by checksum, read-only
    <state_dir>/images/incoming/<sha256>-<token>.part   uploads of the control plane in progress
    <state_dir>/disks/<disk uuid>.qcow2 (+ .json)   VM disks: an overlay of a base, or blank
    <state_dir>/snapshots/<snapshot uuid>.qcow2  standalone (flattened) copies of a disk
    <state_dir>/metadata/<vm uuid>/              metadata.json, cidata.iso (NoCloud config drive)
    <state_dir>/metadata/server.*                the metadata HTTP service (pid, spec, log, state)
    <state_dir>/nftables.conf (+ .candidate)     the rule set last applied (and the one being applied)
    <state_dir>/.lock                            the host lock; <state_dir>/vms/<uuid>/vm-up.lock a VM's
    <state_dir>/kvm-probe.json                   whether KVM runs guests, for this boot and qemu
    <state_dir>/ha/                              the fence guard: lease.json, guard.pid, fenced.json, guard.log
    <state_dir>/migration/                       migrations in progress (migration.py)
    <state_dir>/exporter/                        the metrics exporter (exporter.py): spec, pid, log
    <state_dir>/record-verbs, recorded-verbs.jsonl   a benchmark's recording host (recording.py)
"""

import os

# A unix socket path must fit in sun_path (108 bytes with the NUL); the longest one we create is
# <state_dir>/vms/<uuid>/qmp.sock.
MAX_SOCKET_PATH = 107
LONGEST_SOCKET_SUFFIX = len("/vms/") + 36 + len("/qmp.sock")
MAX_STATE_DIR = MAX_SOCKET_PATH - LONGEST_SOCKET_SUFFIX


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


def network_state_path(state_dir, vni):
    return os.path.join(network_dir(state_dir, vni), "network.json")


def host_lock_path(state_dir):
    return os.path.join(state_dir, ".lock")


def ruleset_path(state_dir):
    return os.path.join(state_dir, "nftables.conf")


def ruleset_candidate_path(state_dir):
    return os.path.join(state_dir, "nftables.conf.candidate")


def kvm_probe_path(state_dir):
    return os.path.join(state_dir, "kvm-probe.json")


def radvd_paths(state_dir, vni):
    directory = network_dir(state_dir, vni)
    return {"config": os.path.join(directory, "radvd.conf"),
            "pid": os.path.join(directory, "radvd.pid"),
            "log": os.path.join(directory, "radvd.log")}


def vm_paths(state_dir, vm_uuid):
    directory = vm_dir(state_dir, vm_uuid)
    return {"dir": directory,
            "spec": os.path.join(directory, "spec.json"),
            "qmp": os.path.join(directory, "qmp.sock"),
            "vnc": os.path.join(directory, "vnc.sock"),
            # The serial line as a socket for the console (qemu also keeps writing it to serial.log).
            "tty": os.path.join(directory, "tty.sock"),
            "pid": os.path.join(directory, "qemu.pid"),
            "serial": os.path.join(directory, "serial.log"),
            "lock": os.path.join(directory, "vm-up.lock")}


def vm_migration_key_path(state_dir, vm_uuid):
    """The source's SSH key for one migration of this VM: it opens only this VM's incoming sockets."""
    return os.path.join(vm_dir(state_dir, vm_uuid), "migration_key")


def port_state_path(state_dir, tap):
    return os.path.join(ports_dir(state_dir), f"{tap}.json")


def nat64_dir(state_dir):
    return os.path.join(state_dir, "nat64")


def nat64_paths(state_dir, pool_id):
    directory = os.path.join(nat64_dir(state_dir), str(pool_id))
    return {"dir": directory, "config": os.path.join(directory, "tayga.conf"),
            "pid": os.path.join(directory, "tayga.pid"), "state": os.path.join(directory, "state.json")}


def guest_routes_path(state_dir):
    """Which feature wants which /128 route to a guest on another host (guest_routes.py)."""
    return os.path.join(state_dir, "guest-routes.json")


def images_dir(state_dir):
    return os.path.join(state_dir, "images")


def base_image_path(state_dir, sha256):
    return os.path.join(images_dir(state_dir), f"{sha256}.qcow2")


def upload_path(state_dir, sha256, token):
    """Where the control plane streams an image before image-ensure verifies it."""
    return os.path.join(images_dir(state_dir), "incoming", f"{sha256}-{token}.part")


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


def vm_metadata_paths(state_dir, vm_uuid):
    directory = vm_metadata_dir(state_dir, vm_uuid)
    return {"dir": directory,
            "record": os.path.join(directory, "metadata.json"),
            "drive": os.path.join(directory, "cidata.iso")}


def ha_paths(state_dir):
    """The host's fence guard (ha.py): its lease, pid, fence record and log."""
    directory = os.path.join(state_dir, "ha")
    return {"dir": directory,
            "lease": os.path.join(directory, "lease.json"),
            "pid": os.path.join(directory, "guard.pid"),
            "fenced": os.path.join(directory, "fenced.json"),
            # The newest step of each target that called this host (refuse_stale_holder).
            "holders": os.path.join(directory, "holders"),
            # Held while a VM's start generation is read and written (remember_generation).
            "generations_lock": os.path.join(directory, "generations.lock"),
            "log": os.path.join(directory, "guard.log")}


def migration_dir(state_dir):
    return os.path.join(state_dir, "migration")


def metadata_server_paths(state_dir):
    directory = metadata_dir(state_dir)
    return {"dir": directory,
            "pid": os.path.join(directory, "server.pid"),
            "spec": os.path.join(directory, "server-spec.json"),
            "state": os.path.join(directory, "server-state.json"),
            "log": os.path.join(directory, "server.log"),
            # Named on the server's command line, so its process is found by its state_dir.
            "marker": os.path.join(directory, "server") + "/"}


def proxy_paths(state_dir):
    """The shared HTTP(S) proxy of a proxy host (proxy.py): HAProxy's config, pid, state."""
    directory = os.path.join(state_dir, "proxy")
    return {"dir": directory,
            "config": os.path.join(directory, "haproxy.cfg"),
            "candidate": os.path.join(directory, "haproxy.cfg.new"),
            "pid": os.path.join(directory, "haproxy.pid"),
            "state": os.path.join(directory, "state.json")}


def jump_paths(state_dir):
    """The SSH jump host of a proxy host (jump.py): its own sshd, keys and config."""
    directory = os.path.join(state_dir, "jump")
    return {"dir": directory,
            "config": os.path.join(directory, "sshd_config"),
            "candidate": os.path.join(directory, "sshd_config.new"),
            "authorized_keys": os.path.join(directory, "authorized_keys"),
            "host_key": os.path.join(directory, "ssh_host_ed25519_key"),
            "pid": os.path.join(directory, "sshd.pid"),
            "log": os.path.join(directory, "sshd.log")}


def exporter_paths(state_dir):
    directory = os.path.join(state_dir, "exporter")
    return {"dir": directory, "spec": os.path.join(directory, "exporter.json"),
            "pid": os.path.join(directory, "exporter.pid"), "log": os.path.join(directory, "exporter.log")}


def recording_paths(state_dir):
    """A recording host's marker (its presence turns recording on) and its log of verbs."""
    return {"marker": os.path.join(state_dir, "record-verbs"),
            "log": os.path.join(state_dir, "recorded-verbs.jsonl")}
