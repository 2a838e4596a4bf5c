"""qcow2 files written by the host program itself (qcow2.py) against what QEMU's own tools say of
them: qemu-img check, info (field by field against `qemu-img create`), compare, resize, and qemu-io
writing and reading a guest's data. No lab: only files and the qemu tools."""
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from agents.hostside.uncloud_hostside import storage
from agents.hostside.uncloud_hostside.errors import HostsideError
from agents.hostside.uncloud_hostside.qcow2 import qcow2_virtual_size, write_qcow2

pytestmark = pytest.mark.skipif(not (shutil.which("qemu-img") and shutil.which("qemu-io")),
                                reason="qemu-img and qemu-io are needed")

MIB, GIB, TIB = 1 << 20, 1 << 30, 1 << 40
SIZES = {
    "1MiB": MIB,
    "1GiB": GIB,
    "10GiB": 10 * GIB,
    "not-a-cluster-multiple": 3 * 65536 + 1536,
    "not-a-sector-multiple": 1_000_001,  # qemu-img rounds it up to 512 bytes; so must we
    "4TiB": 4 * TIB,
    "64TiB": 64 * TIB,  # the largest disk the verbs allow (MAX_DISK_MIB): an L1 table of 16 clusters
}
BASE_SIZE = MIB
DISK_UUID = "9d000000-0000-4000-8000-000000000001"


def run(*argv):
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def info(path):
    return json.loads(run("qemu-img", "info", "-f", "qcow2", "--output=json", str(path)))


def assert_clean(path):
    # Exit 0 only without errors, leaks or corruptions; --output=json says which, if any.
    report = json.loads(subprocess.run(["qemu-img", "check", "-f", "qcow2", "--output=json", str(path)],
                                       capture_output=True, text=True).stdout)
    assert report.get("check-errors", 0) == 0 and report.get("leaks", 0) == 0, report
    assert report.get("corruptions", 0) == 0, report


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A base image with data in it, so that an overlay reading through to it is a real check."""
    path = tmp_path_factory.mktemp("base") / "base.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(path), str(BASE_SIZE))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 512k", str(path))
    return path


@pytest.mark.parametrize("kind", ["blank", "overlay"])
@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_a_written_qcow2_is_what_qemu_img_create_makes(tmp_path, base, kind, size):
    ours, theirs = tmp_path / "ours.qcow2", tmp_path / "theirs.qcow2"
    backing = str(base) if kind == "overlay" else None
    write_qcow2(str(ours), size, backing_file=backing)
    run("qemu-img", "create", "-q", "-f", "qcow2", *(["-b", backing, "-F", "qcow2"] if backing else []),
        str(theirs), str(size))
    assert_clean(ours)
    # The file stays a few clusters whatever the virtual size (64 TiB: 3 clusters and a 1 MiB L1).
    assert os.path.getsize(ours) == os.path.getsize(theirs) <= 4 * MIB
    mine, reference = info(ours), info(theirs)
    for field in ("filename", "actual-size"):  # the path, and what the file system allotted
        mine.pop(field), reference.pop(field)
    assert mine == reference
    assert mine["format"] == "qcow2" and mine["cluster-size"] == 65536
    assert mine["virtual-size"] == -(-size // 512) * 512 == qcow2_virtual_size(str(ours))
    assert mine.get("backing-filename") == backing
    assert mine.get("backing-filename-format") == ("qcow2" if backing else None)


@pytest.mark.parametrize("kind", ["blank", "overlay"])
@pytest.mark.parametrize("size", [MIB, 10 * GIB, 4 * TIB], ids=["1MiB", "10GiB", "4TiB"])
def test_a_guest_reads_and_writes_a_written_qcow2(tmp_path, base, kind, size):
    disk = tmp_path / "disk.qcow2"
    write_qcow2(str(disk), size, backing_file=str(base) if kind == "overlay" else None)
    if kind == "overlay":
        # Nothing written yet: the overlay reads as its base (beyond the base's end, as zeros).
        subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", str(disk), str(base)],
                       check=True, capture_output=True)
        run("qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 0 512k", str(disk))
    else:
        run("qemu-io", "-f", "qcow2", "-c", "read -P 0 0 1M", str(disk))
    written = run("qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 1M", str(disk))
    assert "wrote 1048576/1048576 bytes" in written
    read = run("qemu-io", "-f", "qcow2", "-c", "read -P 0xab 0 1M", str(disk))
    assert "read 1048576/1048576 bytes" in read and "Pattern verification failed" not in read
    assert_clean(disk)
    # Growing later is qemu-img's work: it must take a file we wrote.
    run("qemu-img", "resize", "-f", "qcow2", str(disk), str(size + GIB))
    assert info(disk)["virtual-size"] == size + GIB
    run("qemu-io", "-f", "qcow2", "-c", "read -P 0xab 0 1M", str(disk))
    assert_clean(disk)


@pytest.fixture
def state_dir():
    """A short state_dir: the verbs refuse long ones (QMP socket paths below them must fit)."""
    path = tempfile.mkdtemp(prefix="uc-qcow2-")
    yield Path(path)
    shutil.rmtree(path)


def test_disk_ensure_writes_an_overlay_and_a_blank_disk(state_dir, base):
    images = state_dir / "images"
    images.mkdir(parents=True)
    sha = "ab" * 32
    shutil.copyfile(base, images / f"{sha}.qcow2")
    made = storage.verb_disk_ensure({"state_dir": str(state_dir), "disk_uuid": DISK_UUID, "size_mib": 64,
                                     "base_sha256": sha})
    assert made["virtual_size_bytes"] == 64 * MIB and made["changes"]
    assert info(made["path"])["backing-filename"] == str(images / f"{sha}.qcow2")
    assert_clean(made["path"])
    grown = storage.verb_disk_ensure({"state_dir": str(state_dir), "disk_uuid": DISK_UUID, "size_mib": 128,
                                      "base_sha256": sha})
    assert grown["virtual_size_bytes"] == 128 * MIB == info(made["path"])["virtual-size"]
    blank = storage.verb_disk_ensure({"state_dir": str(state_dir), "disk_uuid": DISK_UUID.replace("1", "2", 1),
                                      "size_mib": 1})
    assert info(blank["path"]).get("backing-filename") is None
    assert sorted(os.listdir(state_dir / "disks")) == sorted(
        [f"{made['disk_uuid']}.json", f"{made['disk_uuid']}.qcow2",
         f"{blank['disk_uuid']}.json", f"{blank['disk_uuid']}.qcow2"])


def test_disk_ensure_refuses_a_base_that_is_not_a_qcow2_and_leaves_nothing(state_dir):
    images = state_dir / "images"
    images.mkdir(parents=True)
    sha = "cd" * 32
    (images / f"{sha}.qcow2").write_bytes(b"\0" * 4096)  # raw zeros where a qcow2 should be
    with pytest.raises(HostsideError) as refused:
        storage.verb_disk_ensure({"state_dir": str(state_dir), "disk_uuid": DISK_UUID, "size_mib": 64,
                                  "base_sha256": sha})
    assert refused.value.code == "bad_image"
    assert os.listdir(state_dir / "disks") == []
