"""The images verbs: base images by checksum, disks as qcow2 overlays, snapshots, the NoCloud
config drive and the metadata service, with a real guest booted from an imported image."""
import hashlib
import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from hostside_testlib import PROGRAM, PYTHON, fails, net_spec, nic, ok, vm_spec

from tests.lab.waiting import wait_for_line

demo_guest = pytest.importorskip("images.demo_guest")

DISK_UUID = "9c000000-0000-4000-8000-000000000001"
VM_A = "9c000000-0000-4000-8000-00000000000a"
VM_B = "9c000000-0000-4000-8000-00000000000b"
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJs8WqXbJ0zv7xk3ZlQ0o1ZmIRnEvSJ2v0hUyn8b6bZg alice@laptop"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE3lVnZjPp2RwzQ5Q6cT1qM8f0bqJ0vYlG0yHxHn0QkP bob@elsewhere"
PREFIX = "2001:db8:400:1::/64"
MAC_A, MAC_B = "02:00:00:dd:00:0a", "02:00:00:dd:00:0b"
BOOT_TIMEOUT_S = 180


def sha256_of(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def import_base(host, source):
    """What images.baseimage.ensure_base_image does, with a local copy as the transfer."""
    spec = {"sha256": sha256_of(source), "size_bytes": Path(source).stat().st_size}
    first = ok(host, "image-ensure", **spec)
    if first["present"]:
        return first
    token = secrets.token_hex(8)
    answer = ok(host, "image-ensure", **spec, upload_token=token)
    shutil.copyfile(source, answer["upload_path"])
    return ok(host, "image-ensure", **spec, upload_token=token)


def metadata_spec(vm_uuid, hostname, key):
    return {"uuid": vm_uuid, "hostname": hostname, "name": hostname,
            "ssh_keys": [{"name": "laptop", "public_key": key}], "user_data": "#cloud-config\n"}


def iso_file(iso, name):
    return subprocess.run(["isoinfo", "-R", "-i", iso, "-x", f"/{name}"], capture_output=True, text=True,
                          check=True).stdout


def test_base_images_disks_and_snapshots(lone_host, tmp_path):
    host = lone_host
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    sha = sha256_of(base)
    state_dir = str(host.state_dir)

    # A corrupted transfer is refused and removed.
    token = secrets.token_hex(8)
    answer = ok(host, "image-ensure", sha256=sha, size_bytes=base.stat().st_size, upload_token=token)
    assert not answer["present"]
    Path(answer["upload_path"]).write_bytes(b"QFI\xfb" + bytes(base.stat().st_size - 4))
    fails(host, "image-ensure", {"state_dir": state_dir, "sha256": sha, "size_bytes": base.stat().st_size,
                                 "upload_token": token}, "checksum_mismatch")
    assert not Path(answer["upload_path"]).exists()

    imported = import_base(host, base)
    assert imported["present"] and sha256_of(imported["path"]) == sha
    assert import_base(host, base)["changes"] == []  # once per checksum

    made = ok(host, "disk-ensure", disk_uuid=DISK_UUID, size_mib=128, base_sha256=sha)
    info = json.loads(subprocess.run(["qemu-img", "info", "-f", "qcow2", "--output=json", made["path"]],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["virtual-size"] == 128 * 1024 * 1024 and info["backing-filename"] == imported["path"]
    assert ok(host, "disk-ensure", disk_uuid=DISK_UUID, size_mib=128, base_sha256=sha)["changes"] == []
    grown = ok(host, "disk-ensure", disk_uuid=DISK_UUID, size_mib=256, base_sha256=sha)
    assert grown["virtual_size_bytes"] == 256 * 1024 * 1024 and grown["changes"]
    error = fails(host, "disk-ensure", {"state_dir": state_dir, "disk_uuid": DISK_UUID, "size_mib": 128,
                                        "base_sha256": sha}, "bad_spec")
    assert "never shrink" in error["message"]
    fails(host, "disk-ensure", {"state_dir": state_dir, "disk_uuid": DISK_UUID, "size_mib": 300,
                                "base_sha256": "../../etc/shadow"}, "bad_spec")

    snapshot = ok(host, "disk-snapshot", disk_uuid=DISK_UUID, snapshot_uuid=VM_A)
    snapshot_info = json.loads(subprocess.run(
        ["qemu-img", "info", "-f", "qcow2", "--output=json", snapshot["path"]],
        capture_output=True, text=True, check=True).stdout)
    assert "backing-filename" not in snapshot_info  # standalone: it outlives base and disk
    assert snapshot["sha256"] == sha256_of(snapshot["path"])

    in_use = fails(host, "image-delete", {"state_dir": state_dir, "sha256": sha}, "in_use")
    assert in_use["disks"] == [DISK_UUID]
    assert ok(host, "disk-delete", disk_uuid=DISK_UUID)["changes"]
    assert ok(host, "disk-delete", disk_uuid=DISK_UUID)["changes"] == []
    assert ok(host, "image-delete", sha256=sha)["changes"]
    assert ok(host, "snapshot-delete", snapshot_uuid=VM_A)["changes"]
    assert sorted(p.name for p in (host.state_dir / "disks").iterdir()) == []
    assert sorted(p.name for p in (host.state_dir / "images").iterdir()) == ["incoming"]


def test_config_drive_is_nocloud(lone_host):
    host = lone_host
    drive = ok(host, "vm-metadata", **metadata_spec(VM_A, "web-1", KEY_A))
    iso = drive["config_drive"]
    volume = subprocess.run(["isoinfo", "-d", "-i", iso], capture_output=True, text=True, check=True).stdout
    assert "Volume id: cidata" in volume
    meta_data = iso_file(iso, "meta-data")
    assert f'instance-id: "{VM_A}"' in meta_data and "local-hostname: web-1" in meta_data
    assert f'  - "{KEY_A}"' in meta_data
    assert iso_file(iso, "user-data") == "#cloud-config\n"
    assert ok(host, "vm-metadata", **metadata_spec(VM_A, "web-1", KEY_A))["changes"] == []
    assert ok(host, "vm-metadata", **metadata_spec(VM_A, "web-2", KEY_A))["changes"]
    fails(host, "vm-metadata", {"state_dir": str(host.state_dir), **metadata_spec(VM_A, "web 1", KEY_A)}, "bad_spec")
    fails(host, "vm-metadata", {"state_dir": str(host.state_dir),
                                **metadata_spec(VM_A, "web", "ssh-rsa AAAA\nroot")}, "bad_spec")
    assert ok(host, "vm-metadata-delete", uuid=VM_A)["changes"]
    assert not Path(iso).exists()


def wget_from_namespace(netns, url):
    completed = subprocess.run(["ip", "netns", "exec", netns, "busybox", "wget", "-q", "-S", "-O", "-", url],
                               capture_output=True, text=True, timeout=30)
    return completed.returncode, completed.stdout, completed.stderr


def test_guest_boots_from_imported_image_and_reads_its_metadata(hosts):
    host = hosts[0]
    guest = demo_guest.build_demo_guest()
    ok(host, "net-up", **net_spec(400, PREFIX, host))
    service = ok(host, "metadata-up")
    assert service["bridges"] == ["br400"]
    assert ok(host, "metadata-up")["changes"] == []

    base = import_base(host, guest.disk_qcow2)
    disk = ok(host, "disk-ensure", disk_uuid=DISK_UUID, size_mib=256,
              base_sha256=sha256_of(guest.disk_qcow2))
    drive = ok(host, "vm-metadata", **metadata_spec(VM_A, "web-1", KEY_A))
    # Another VM's metadata on the same host: A must never see it.
    ok(host, "vm-metadata", **metadata_spec(VM_B, "other", KEY_B))

    vm = ok(host, "vm-up", **vm_spec(VM_A, [nic(MAC_A, 400, PREFIX)], name="web-1", memory_mib=256, disks=[
        {"path": disk["path"], "format": "qcow2"},
        {"path": drive["config_drive"], "format": "raw", "readonly": True}]))
    serial = vm["serial_log"]
    assert wait_for_line(serial, "UNCLOUD-CIDATA-KEY", BOOT_TIMEOUT_S) == f"UNCLOUD-CIDATA-KEY {KEY_A}"
    assert wait_for_line(serial, "UNCLOUD-HOSTNAME", 10) == "UNCLOUD-HOSTNAME web-1"
    assert wait_for_line(serial, "UNCLOUD-METADATA instance-id", BOOT_TIMEOUT_S) == \
        f"UNCLOUD-METADATA instance-id {VM_A}"
    assert wait_for_line(serial, "UNCLOUD-METADATA key", 30) == f"UNCLOUD-METADATA key {KEY_A}"
    wait_for_line(serial, "UNCLOUD-READY", 60)
    assert KEY_B not in Path(serial).read_text(errors="replace")
    assert base["present"]

    # Someone on the network who is no VM of this host (a namespace on the bridge) is refused.
    intruder = f"ucmd{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", intruder], check=True)
    try:
        subprocess.run(["ip", "link", "add", "mdx0", "netns", host.netns, "type", "veth", "peer", "name", "eth0",
                        "netns", intruder], check=True)
        host.run(["ip", "link", "set", "mdx0", "master", "br400", "up"])
        subprocess.run(["ip", "-n", intruder, "link", "set", "eth0", "up"], check=True)
        subprocess.run(["ip", "-n", intruder, "-6", "addr", "add", "fe80::bad/64", "dev", "eth0", "nodad"],
                       check=True)
        deadline = time.monotonic() + 20
        while True:
            status, body, errors = wget_from_namespace(
                intruder, "http://[fe80::a9fe:a9fe%eth0]/openstack/latest/meta_data.json")
            if "403" in errors or time.monotonic() > deadline:
                break
            time.sleep(0.5)  # the bridge port takes a moment to forward
        assert status != 0 and "403" in errors, (status, body, errors)
        assert KEY_A not in body and KEY_B not in body
    finally:
        subprocess.run(["ip", "netns", "del", intruder], check=False)
        host.run(["ip", "link", "del", "mdx0"], check=False)

    ok(host, "vm-down", uuid=VM_A, hard=True)
    ok(host, "disk-delete", disk_uuid=DISK_UUID)
    ok(host, "vm-metadata-delete", uuid=VM_A)
    ok(host, "metadata-down")


def test_metadata_documents(tmp_path):
    """The EC2 and OpenStack layouts cloud-init reads, rendered by the program itself."""
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(PROGRAM)!r})\n"
        "from uncloud_hostside import metadata_server as hs\n"
        f"m = {{'uuid': {VM_A!r}, 'name': 'web-1', 'hostname': 'web-1', 'project_id': '', "
        f"'ssh_keys': [{{'name': 'laptop', 'public_key': {KEY_A!r}}}], 'user_data': '#cloud-config\\n', "
        "'network_config': None}\n"
        "paths = ['/openstack', '/openstack/latest/meta_data.json', '/openstack/2018-08-27/user_data',\n"
        "         '/latest/meta-data/', '/latest/meta-data/instance-id', '/latest/meta-data/public-keys',\n"
        "         '/2009-04-04/meta-data/public-keys/0/openssh-key', '/latest/user-data', '/etc/shadow',\n"
        "         '/openstack/latest/../../x']\n"
        "print(json.dumps({p: hs.metadata_response(m, p) for p in paths}))\n")
    answers = json.loads(subprocess.run([PYTHON, "-c", script], capture_output=True, text=True,
                                        check=True).stdout)
    assert "latest" in answers["/openstack"][2]
    meta = json.loads(answers["/openstack/latest/meta_data.json"][2])
    assert meta["uuid"] == VM_A and meta["public_keys"] == {"laptop": KEY_A} and meta["hostname"] == "web-1"
    assert answers["/openstack/2018-08-27/user_data"][2] == "#cloud-config\n"
    assert "public-keys/" in answers["/latest/meta-data/"][2]
    assert answers["/latest/meta-data/instance-id"][2] == VM_A
    assert answers["/latest/meta-data/public-keys"][2] == "0=laptop\n"
    assert answers["/2009-04-04/meta-data/public-keys/0/openssh-key"][2] == KEY_A + "\n"
    assert answers["/etc/shadow"][0] == 404 and answers["/openstack/latest/../../x"][0] == 404
