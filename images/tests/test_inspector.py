"""The pure-Python qcow2 header inspector against files made by the real qemu-img."""

import struct

import pytest

from images.inspector import ImageRefused, inspect_qcow2

LIMIT = 2048 * 1024**3


def test_a_plain_qcow2_passes(image_files):
    header = inspect_qcow2(str(image_files["good.qcow2"]), LIMIT)
    assert header.version == 3
    assert header.virtual_size_bytes == 16 * 1024 * 1024


@pytest.mark.parametrize("name, reason", [
    ("shadow-backing.qcow2", "backing file"),
    ("overlay.qcow2", "backing file"),
    ("external-data.qcow2", "external data file"),
    ("encrypted.qcow2", "encrypted"),
    ("huge.qcow2", "above the limit"),
    ("raw-named.qcow2", "not a qcow2 image"),
    ("headless.qcow2", "truncated"),
])
def test_hostile_or_broken_files_are_refused(image_files, name, reason):
    with pytest.raises(ImageRefused, match=reason):
        inspect_qcow2(str(image_files[name]), LIMIT)


def test_other_formats_are_named(tmp_path):
    vmdk = tmp_path / "disk.vmdk"
    vmdk.write_bytes(b"KDMV" + bytes(600))
    with pytest.raises(ImageRefused, match="VMDK"):
        inspect_qcow2(str(vmdk), LIMIT)


def _patched(image_files, tmp_path, offset, fmt, value):
    data = bytearray(image_files["good.qcow2"].read_bytes())
    struct.pack_into(fmt, data, offset, value)
    path = tmp_path / "patched.qcow2"
    path.write_bytes(bytes(data))
    return str(path)


@pytest.mark.parametrize("bit, reason", [(0, "dirty"), (1, "corrupt"), (2, "external data file"), (40, "unknown")])
def test_incompatible_feature_bits(image_files, tmp_path, bit, reason):
    with pytest.raises(ImageRefused, match=reason):
        inspect_qcow2(_patched(image_files, tmp_path, 72, ">Q", 1 << bit), LIMIT)


def test_unknown_version_and_aes_encryption(image_files, tmp_path):
    with pytest.raises(ImageRefused, match="version 4"):
        inspect_qcow2(_patched(image_files, tmp_path, 4, ">I", 4), LIMIT)
    with pytest.raises(ImageRefused, match="encrypted"):
        inspect_qcow2(_patched(image_files, tmp_path, 32, ">I", 1), LIMIT)
