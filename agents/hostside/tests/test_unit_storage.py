"""storage and rbd without root or Ceph: a hostile qcow2 is refused from what qemu-img says, and
rbd answers are parsed."""
import json

import pytest

from agents.hostside.uncloud_hostside import rbd, storage
from agents.hostside.uncloud_hostside.errors import HostsideError

TARGET = {"pool": "rbd", "name": "disk-1", "user": "admin", "conf": "/s/ceph.conf"}


def test_an_image_naming_a_backing_file_is_refused(commands):
    commands.expect("qemu-img", "info", "-f", "qcow2", "--output=json", "/s/images/in.part",
                    stdout=json.dumps({"format": "qcow2", "backing-filename": "/etc/shadow"}))
    info = storage.qemu_img_info("/s/images/in.part")
    with pytest.raises(HostsideError) as refused:
        storage.refuse_external_references(info, "the upload")
    assert refused.value.code == "bad_image" and "backing file" in refused.value.message


def test_an_image_naming_an_external_data_file_is_refused():
    info = {"format": "qcow2", "format-specific": {"type": "qcow2", "data": {"data-file": "/dev/sda"}}}
    with pytest.raises(HostsideError, match="external data file"):
        storage.refuse_external_references(info, "the upload")


def test_a_clean_image_passes():
    storage.refuse_external_references({"format": "qcow2", "virtual-size": 1 << 30}, "the upload")


def test_rbd_info_of_a_missing_image_is_none(commands):
    commands.expect("rbd", "--conf", "/s/ceph.conf", "--id", "admin", "info", "--format", "json", "rbd/disk-1",
                    returncode=2, stderr="rbd: error opening image disk-1: (2) No such file or directory")
    assert rbd.rbd_info(TARGET) is None


def test_rbd_snapshots_by_name(commands):
    commands.expect("rbd", "--conf", "/s/ceph.conf", "--id", "admin", "snap", "ls", "--format", "json",
                    "rbd/disk-1", stdout=json.dumps([{"id": 4, "name": "base", "size": 1024}]))
    assert rbd.rbd_snapshots(TARGET) == {"base": {"id": 4, "name": "base", "size": 1024}}
