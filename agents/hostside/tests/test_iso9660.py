"""ISO 9660 images written by the host program itself (iso9660.py) against what real readers make of
them: isoinfo in its three views (Rock Ridge, Joliet, plain ISO names), blkid, and the Linux kernel of
the demo guest mounting them with and without Rock Ridge and Joliet, each next to an image genisoimage
makes of the same files. No lab: files, the tools, and one qemu guest."""
import errno
import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from agents.hostside.uncloud_hostside import metadata
from agents.hostside.uncloud_hostside.errors import HostsideError
from agents.hostside.uncloud_hostside.iso9660 import iso9660_image, iso_level_1_names, write_iso9660
from tests.lab.waiting import wait_for_line

pytestmark = pytest.mark.skipif(not (shutil.which("isoinfo") and shutil.which("genisoimage")),
                                reason="isoinfo and genisoimage are needed")

CONFIG_DRIVE = {
    "meta-data": b'instance-id: "9c000000-0000-4000-8000-00000000000a"\nlocal-hostname: web-1\n',
    "user-data": b"#cloud-config\n{}\n",
    "network-config": b'{\n "version": 2\n}\n',
    "uncloud.cfg": b"uc.metadata=1\n",
    "vendor-data": b"#cloud-config\n",
}
EDGES = {
    "empty": b"",
    "one-sector": bytes(range(256)) * 8,  # exactly 2048 bytes
    "one-sector-and-a-byte": b"\xff" * 2049,
    "user-data": b"#cloud-config\n",
    "user-data2": b"#cloud-config\n# second\n",  # both are USER_DAT.;1 in 8.3 form
    "non-ascii.txt": "Grüße, 東京, \U0001f680\n".encode(),
    "zz-empty-last": b"",  # empty and last: it points past the last data, into the padding
}
THIRTY = {f"file-{number:02d}.cfg": f"file {number}\n".encode() * number for number in range(30)}
MEGABYTE = {"big": hashlib.sha256(b"seed").digest() * 32768, "meta-data": b"x: 1\n"}
CASES = {"config-drive": CONFIG_DRIVE, "edges": EDGES, "thirty": THIRTY, "megabyte": MEGABYTE}


def run(*argv):
    return subprocess.run(argv, check=True, capture_output=True).stdout


def reference_image(tmp_path, files, volume_id="cidata"):
    """What metadata.py ran before: genisoimage of a directory holding the files."""
    content = tmp_path / "content"
    content.mkdir()
    for name, data in files.items():
        (content / name).write_bytes(data)
    image = tmp_path / "reference.iso"
    run("genisoimage", "-quiet", "-output", str(image), "-volid", volume_id, "-joliet", "-rock",
        "-input-charset", "utf-8", str(content))
    return image


def our_image(tmp_path, files, volume_id="cidata"):
    image = tmp_path / f"ours-{volume_id}.iso"
    write_iso9660(str(image), files, volume_id)
    return image


def listing(image, view):
    """{name: (mode, size)} of the root directory as isoinfo lists it, view "-R", "-J" or ""."""
    text = run("isoinfo", *([view] if view else []), "-l", "-i", str(image)).decode()
    entries = {}
    for line in text.splitlines():
        match = re.match(r"^(\S{10})\s+\d+\s+\d+\s+\d+\s+(\d+) .*\]  (.*?) ?$", line)
        if match and match.group(3) not in (".", ".."):
            entries[match.group(3)] = (match.group(1), int(match.group(2)))
    return entries


def extract(image, view, name):
    return run("isoinfo", *([view] if view else []), "-i", str(image), "-x", f"/{name}")


@pytest.mark.parametrize("files", CASES.values(), ids=CASES.keys())
def test_isoinfo_reads_every_file_in_every_view(tmp_path, files):
    image = our_image(tmp_path, files)
    reference = reference_image(tmp_path, files)
    described = run("isoinfo", "-d", "-i", str(image)).decode()
    assert "Volume id: cidata\n" in described
    assert "Joliet with UCS level 3 found" in described
    assert "Rock Ridge signatures version 1 found" in described
    assert f"Volume size is: {image.stat().st_size // 2048}\n" in described

    rock_ridge, joliet, plain = listing(image, "-R"), listing(image, "-J"), listing(image, "")
    assert {name: size for name, (_, size) in rock_ridge.items()} == {n: len(d) for n, d in files.items()}
    assert {name: mode for name, (mode, _) in rock_ridge.items()} == dict.fromkeys(files, "-r--r--r--")
    assert joliet.keys() == files.keys()
    iso_names = iso_level_1_names(files)
    assert plain.keys() == set(iso_names.values())
    for name, data in files.items():
        assert extract(image, "-R", name) == data, name
        assert extract(image, "-J", name) == data, name
        assert extract(image, "", iso_names[name]) == data, name
        assert joliet[name][1] == plain[iso_names[name]][1] == len(data)

    # genisoimage's image of the same files: the same names in both long views, the same label,
    # and the same plain names wherever 8.3 forms do not collide (each tool numbers its own way).
    assert listing(reference, "-R").keys() == rock_ridge.keys()
    assert listing(reference, "-J").keys() == joliet.keys()
    assert "Volume id: cidata\n" in run("isoinfo", "-d", "-i", str(reference)).decode()
    if files is not EDGES:
        assert listing(reference, "").keys() == plain.keys()


@pytest.mark.parametrize("files", [CONFIG_DRIVE, EDGES], ids=["config-drive", "edges"])
def test_blkid_sees_an_iso9660_labelled_cidata(tmp_path, files):
    for image in (our_image(tmp_path, files), reference_image(tmp_path, files)):
        exported = run("blkid", "-p", "-o", "export", str(image)).decode()
        found = dict(line.split("=", 1) for line in exported.splitlines())
        assert found["TYPE"] == "iso9660" and found["LABEL"] == "cidata", (image, found)


def test_plain_names_are_8_3_upper_case_and_unique():
    names = iso_level_1_names(["meta-data", "user-data", "user-data2", "user-data3", "uncloud.cfg",
                               "network-config", "a.b.c.d", "UPPER", "upper", "x.toolong"])
    assert names == {"meta-data": "META_DAT.;1", "user-data": "USER_DAT.;1", "user-data2": "USER_DA1.;1",
                     "user-data3": "USER_DA2.;1", "uncloud.cfg": "UNCLOUD.CFG;1",
                     "network-config": "NETWORK_.;1", "a.b.c.d": "A_B_C.D;1", "UPPER": "UPPER.;1",
                     "upper": "UPPER1.;1", "x.toolong": "X.TOO;1"}


def test_both_path_tables_of_both_trees_lead_to_their_root():
    # Linux and isoinfo never read the big-endian (M) tables; a big-endian reader would. Checked
    # here by the numbers ECMA-119 9.4 gives, against each descriptor's own root record.
    image = iso9660_image(THIRTY, "cidata")
    roots = set()
    for descriptor_sector in (16, 17):
        descriptor = image[descriptor_sector * 2048:(descriptor_sector + 1) * 2048]
        size = struct.unpack_from("<I", descriptor, 132)[0]
        assert size == struct.unpack_from(">I", descriptor, 136)[0] == 10
        root = struct.unpack_from("<I", descriptor, 156 + 2)[0]
        little, big = struct.unpack_from("<I", descriptor, 140)[0], struct.unpack_from(">I", descriptor, 148)[0]
        assert image[little * 2048:little * 2048 + 10] == struct.pack("<BBIH", 1, 0, root, 1) + b"\0\0"
        assert image[big * 2048:big * 2048 + 10] == struct.pack(">BBIH", 1, 0, root, 1) + b"\0\0"
        roots.add(root)
    assert len(roots) == 2  # Joliet's tree is a tree of its own


def test_the_same_files_make_the_same_bytes():
    first = iso9660_image(CONFIG_DRIVE, "cidata")
    assert iso9660_image(dict(reversed(CONFIG_DRIVE.items())), "cidata") == first
    assert iso9660_image(CONFIG_DRIVE, "cidata", timestamp=1_800_000_000) != first
    assert len(first) % 2048 == 0


@pytest.mark.parametrize("files, volume_id, timestamp, complaint", [
    ({".hidden": b""}, "cidata", 0, "file name"),
    ({"a/b": b""}, "cidata", 0, "file name"),
    ({"x" * 65: b""}, "cidata", 0, "file name"),
    ({"": b""}, "cidata", 0, "file name"),
    ({"text": "not bytes"}, "cidata", 0, "bytes"),
    ({"meta-data": b""}, "", 0, "volume id"),
    ({"meta-data": b""}, "x" * 17, 0, "volume id"),
    ({"meta-data": b""}, "ci data", 0, "volume id"),
    ({"meta-data": b""}, "cidata", -1, "timestamp"),
    ({"meta-data": b""}, "cidata", 1.5, "timestamp"),
    ({"meta-data": b""}, "cidata", 5_869_584_000, "timestamp"),  # 2156: past a record's year byte
])
def test_bad_input_is_refused_clearly(files, volume_id, timestamp, complaint):
    with pytest.raises(ValueError, match=complaint):
        iso9660_image(files, volume_id, timestamp)


@pytest.fixture
def state_dir():
    """A short state_dir: the verbs refuse long ones (QMP socket paths below them must fit)."""
    path = tempfile.mkdtemp(prefix="uc-iso-")
    yield Path(path)
    shutil.rmtree(path)


VM = "9c000000-0000-4000-8000-00000000000a"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJs8WqXbJ0zv7xk3ZlQ0o1ZmIRnEvSJ2v0hUyn8b6bZg alice@laptop"


def metadata_spec(state_dir, **changes):
    return {"state_dir": str(state_dir), "uuid": VM, "hostname": "web-1",
            "ssh_keys": [{"name": "laptop", "public_key": KEY}], "user_data": "#cloud-config\n", **changes}


def test_vm_metadata_writes_the_drive_without_genisoimage(state_dir):
    answer = metadata.verb_vm_metadata(metadata_spec(state_dir, network_config={"version": 2}))
    drive = answer["config_drive"]
    assert answer["changes"] and drive == str(state_dir / "metadata" / VM / "cidata.iso")
    assert sorted(os.listdir(state_dir / "metadata" / VM)) == ["cidata.iso", "metadata.json"]
    assert listing(drive, "-R").keys() == {"meta-data", "user-data", "network-config", "uncloud.cfg"}
    assert extract(drive, "-R", "meta-data").decode() == (
        f'instance-id: "{VM}"\nlocal-hostname: web-1\npublic-keys:\n  - "{KEY}"\n')
    assert extract(drive, "-J", "uncloud.cfg") == b"uc.metadata=1\n"
    assert extract(drive, "-R", "network-config") == b'{\n "version": 2\n}\n'
    before = Path(drive).read_bytes()
    assert metadata.verb_vm_metadata(metadata_spec(state_dir, network_config={"version": 2}))["changes"] == []
    # Rebuilt from the same metadata (as a migration's destination does): the same bytes.
    os.remove(drive)
    assert metadata.verb_vm_metadata(metadata_spec(state_dir, network_config={"version": 2}))["changes"]
    assert Path(drive).read_bytes() == before


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_full_disk_is_disk_full_and_leaves_no_drive(state_dir):
    metadata_dir = state_dir / "metadata"
    metadata_dir.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(metadata_dir)], check=True)
    try:
        with pytest.raises(HostsideError) as refused:
            metadata.verb_vm_metadata(metadata_spec(state_dir))
        assert refused.value.code == "disk_full" and "space" in refused.value.message
        assert os.listdir(metadata_dir / VM) == []  # neither the drive, its .tmp nor the record
    finally:
        subprocess.run(["umount", str(metadata_dir)], check=True)


def test_writing_over_an_existing_file_is_refused(tmp_path):
    existing = tmp_path / "taken.iso"
    existing.write_bytes(b"keep")
    with pytest.raises(FileExistsError) as refused:
        write_iso9660(str(existing), CONFIG_DRIVE, "cidata")
    assert refused.value.errno == errno.EEXIST and existing.read_bytes() == b"keep"


# --- the Linux kernel: the demo guest mounts both images ----------------------------------------------

GUEST_SCRIPT = r"""umount /mnt/cidata; mkdir -p /mnt/x; printf 'ISO-%s\n' BEGIN
for d in vda vdb vdc; do for o in ro ro,norock ro,norock,nojoliet; do mount -t iso9660 -o $o /dev/$d /mnt/x || printf 'MOUNT-%s %s %s\n' FAILED $d $o; for f in /mnt/x/*; do printf 'F %s %s %s %s %s %s\n' $d $o "${f#/mnt/x/}" $(stat -c %a "$f") $(wc -c < "$f") $(sha256sum < "$f" | cut -c1-64); done; umount /mnt/x; done; done
for l in cidata edges cidref; do printf 'L %s %s\n' $l "$(findfs LABEL=$l)"; done; dmesg | grep -i -e isofs -e iso9660 -e 'rock ridge' | sed 's/^/K /'; printf 'ISO-%s\n' END
"""


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 is needed")
def test_the_linux_kernel_mounts_it_in_every_view(tmp_path):
    demo_guest = pytest.importorskip("images.demo_guest")
    guest = demo_guest.build_demo_guest()
    # vda: a config drive as vm-metadata makes it (the smallest image: busybox's findfs once
    # missed it), vdb: every edge case, vdc: genisoimage's image of the same edge cases.
    files = {**CONFIG_DRIVE, **EDGES, **{name: data for name, data in list(THIRTY.items())[:10]}}
    config_drive = our_image(tmp_path, CONFIG_DRIVE)
    ours = our_image(tmp_path, files, "edges")
    reference = reference_image(tmp_path, files, "cidref")
    serial_log = tmp_path / "serial.log"
    command = ["qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-smp", "1", "-nodefaults", "-no-user-config",
               "-no-reboot", "-display", "none", "-chardev", "stdio,id=serial,signal=off",
               "-serial", "chardev:serial", "-kernel", str(guest.kernel), "-initrd", str(guest.initrd),
               "-append", demo_guest.guest_cmdline() + " uc.timeout=1",
               *[argument for image in (config_drive, ours, reference)
                 for argument in ("-drive", f"file={image},if=virtio,format=raw,readonly=on")]]
    with serial_log.open("wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
    try:
        alive = lambda: process.poll() is None  # noqa: E731
        wait_for_line(serial_log, "UNCLOUD-READY", 180, alive=alive)
        assert re.search(r"^UNCLOUD-CIDATA /dev/vda ok", serial_log.read_text(errors="replace"), re.M)
        for attempt in range(3):  # the console shell starts a moment after READY
            process.stdin.write(b"\n" + GUEST_SCRIPT.encode())
            process.stdin.flush()
            try:
                wait_for_line(serial_log, "ISO-END", 30, alive=alive)
                break
            except AssertionError:
                if attempt == 2:
                    raise
    finally:
        process.kill()
        process.wait()
    serial = serial_log.read_text(errors="replace").replace("\r", "")
    block = serial[serial.index("ISO-BEGIN\n"):serial.index("ISO-END\n")]
    assert "MOUNT-FAILED" not in block, block
    seen = {}
    for line in block.splitlines():
        if line.startswith("F "):
            _, device, options, name, mode, size, digest = line.split()
            seen.setdefault((device, options), {})[name] = (mode, int(size), digest)

    def expected(names, mode=None, files=files):
        return {names[name]: (mode, len(data), hashlib.sha256(data).hexdigest()) for name, data in files.items()}

    assert seen[("vda", "ro")] == expected({name: name for name in CONFIG_DRIVE}, "444", CONFIG_DRIVE), block

    real_names = {name: name for name in files}
    # Linux shows plain ISO names lower-cased, without ";1" nor a trailing dot.
    plain_names = {name: iso.lower().removesuffix(";1").rstrip(".")
                   for name, iso in iso_level_1_names(files).items()}
    assert seen[("vdb", "ro")] == expected(real_names, "444"), block  # Rock Ridge: names and modes
    for options, names in (("ro,norock", real_names), ("ro,norock,nojoliet", plain_names)):
        assert {name: entry[1:] for name, entry in seen[("vdb", options)].items()} == \
            {name: entry[1:] for name, entry in expected(names).items()}, (options, block)
    # genisoimage's image reads the same in the long-name views.
    for options in ("ro", "ro,norock"):
        assert {name: entry[1:] for name, entry in seen[("vdc", options)].items()} == \
            {name: entry[1:] for name, entry in seen[("vdb", options)].items()}, options
    # busybox findfs, as the guest's init uses it
    assert re.findall(r"^L (\S+) (\S*)$", block, re.M) == [
        ("cidata", "/dev/vda"), ("edges", "/dev/vdb"), ("cidref", "/dev/vdc")], block
    kernel_lines = [line for line in block.splitlines() if line.startswith("K ")]
    assert not [line for line in kernel_lines if re.search(r"corrupt|error|bad|unable", line, re.I)], kernel_lines
