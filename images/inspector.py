"""Reads a customer's image file in pure Python before any qemu tool may touch it (DESIGN.md 5).

A qcow2 header can name a backing file or an external data file anywhere on the host, and
qemu-img follows such names (reads them, and some operations write them). So the header, its
extensions and the placement of its tables are checked here, with `struct` only; a file that
passes is then opened by `qemu-img info/check -f qcow2` (never format probing).

Refused: anything that is not qcow2 (raw disks are accepted only when the upload says
`format=raw`; they are converted, see images/validation.py), qcow2 versions other than 2 and 3, a
backing file, an external data file (incompatible feature bit 2 or the header extension),
encryption (AES or LUKS), the corrupt and dirty bits, unknown incompatible features, a virtual
size above the configured limit, and tables that point beyond the end of the file (truncation).
"""

import os
import struct
from dataclasses import dataclass, field

QCOW2_MAGIC = b"QFI\xfb"
QCOW2_V2_HEADER_BYTES = 72
QCOW2_V3_HEADER_BYTES = 104
MAX_HEADER_BYTES = 64 * 1024

INCOMPATIBLE_DIRTY = 1 << 0
INCOMPATIBLE_CORRUPT = 1 << 1
INCOMPATIBLE_EXTERNAL_DATA = 1 << 2
INCOMPATIBLE_COMPRESSION_TYPE = 1 << 3
INCOMPATIBLE_EXTENDED_L2 = 1 << 4
KNOWN_INCOMPATIBLE = (INCOMPATIBLE_DIRTY | INCOMPATIBLE_CORRUPT | INCOMPATIBLE_EXTERNAL_DATA
                      | INCOMPATIBLE_COMPRESSION_TYPE | INCOMPATIBLE_EXTENDED_L2)

EXTENSION_END = 0x00000000
EXTENSION_BACKING_FORMAT = 0xE2792ACA
EXTENSION_FEATURE_NAMES = 0x6803F857
EXTENSION_BITMAPS = 0x23852875
EXTENSION_FULL_DISK_ENCRYPTION = 0x0537BE77
EXTENSION_EXTERNAL_DATA_FILE = 0x44415441

# Formats people upload by mistake, by their first bytes, to say what the file is.
OTHER_FORMATS = [
    (0, b"KDMV", "VMDK"),
    (0, b"vhdxfile", "VHDX"),
    (0, b"conectix", "VHD"),
    (0, b"LUKS\xba\xbe", "LUKS-encrypted"),
    (0, b"<<< Oracle VM VirtualBox Disk Image >>>", "VDI"),
    (0x8001, b"CD001", "ISO 9660"),
    (0, b"\x1f\x8b", "gzip-compressed"),
    (0, b"\xfd7zXZ\x00", "xz-compressed"),
    (0, b"(\xb5/\xfd", "zstd-compressed"),
    (0, b"BZh", "bzip2-compressed"),
    (257, b"ustar", "tar"),
]


class ImageRefused(ValueError):
    """The file is not acceptable; the message tells the customer why."""


@dataclass
class Qcow2Header:
    version: int
    virtual_size_bytes: int
    cluster_bits: int
    file_size_bytes: int
    incompatible_features: int = 0
    extensions: list[int] = field(default_factory=list)


def describe_other_format(head: bytes) -> str | None:
    for offset, magic, name in OTHER_FORMATS:
        if head[offset:offset + len(magic)] == magic:
            return name
    return None


def inspect_qcow2(path: str, max_virtual_size_bytes: int) -> Qcow2Header:
    """Parse and check the qcow2 header of the file at path; ImageRefused says what is wrong."""
    file_size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(MAX_HEADER_BYTES)
        if head[:4] != QCOW2_MAGIC:
            other = describe_other_format(head)
            if other:
                raise ImageRefused(f"This is a {other} file, not a qcow2 image. Convert it to qcow2 "
                                   "(qemu-img convert -O qcow2) and upload it again.")
            raise ImageRefused("This is not a qcow2 image (it does not start with the qcow2 magic). "
                               "If it is a raw disk image, upload it with format=raw: it will be converted.")
        if len(head) < QCOW2_V2_HEADER_BYTES:
            raise ImageRefused("The qcow2 header is truncated.")
        (_, version, backing_offset, backing_size, cluster_bits, virtual_size, crypt_method, l1_size,
         l1_offset, refcount_offset, refcount_clusters, _snapshots, _snapshots_offset) = struct.unpack(
            ">4sIQIIQIIQQIIQ", head[:QCOW2_V2_HEADER_BYTES])
        if version not in (2, 3):
            raise ImageRefused(f"qcow2 version {version} is not supported (only 2 and 3).")
        header = Qcow2Header(version=version, virtual_size_bytes=virtual_size, cluster_bits=cluster_bits,
                             file_size_bytes=file_size)
        header_length = QCOW2_V2_HEADER_BYTES
        if version == 3:
            if len(head) < QCOW2_V3_HEADER_BYTES:
                raise ImageRefused("The qcow2 header is truncated.")
            incompatible, _compatible, _autoclear, _refcount_order, header_length = struct.unpack(
                ">QQQII", head[QCOW2_V2_HEADER_BYTES:QCOW2_V3_HEADER_BYTES])
            header.incompatible_features = incompatible
            if header_length < QCOW2_V3_HEADER_BYTES or header_length > len(head) or header_length % 8:
                raise ImageRefused("The qcow2 header length is invalid.")
            if incompatible & INCOMPATIBLE_EXTERNAL_DATA:
                raise ImageRefused("The image keeps its data in an external data file: refused.")
            if incompatible & INCOMPATIBLE_CORRUPT:
                raise ImageRefused("The image is marked corrupt.")
            if incompatible & INCOMPATIBLE_DIRTY:
                raise ImageRefused("The image is marked dirty (it was not closed cleanly): repair it with "
                                   "qemu-img check -r all and upload it again.")
            unknown = incompatible & ~KNOWN_INCOMPATIBLE
            if unknown:
                raise ImageRefused(f"The image uses unknown incompatible qcow2 features (0x{unknown:x}).")
        if backing_offset or backing_size:
            raise ImageRefused("The image names a backing file: refused. Flatten it first "
                               "(qemu-img convert -O qcow2 image.qcow2 flat.qcow2).")
        if crypt_method:
            raise ImageRefused("The image is encrypted: refused.")
        if not 9 <= cluster_bits <= 21:
            raise ImageRefused(f"The image has an invalid cluster size (2^{cluster_bits}).")
        if virtual_size > max_virtual_size_bytes:
            raise ImageRefused(f"The image's virtual size ({virtual_size} bytes) is above the limit of "
                               f"{max_virtual_size_bytes} bytes.")
        header.extensions = _check_extensions(head, header_length)
        _check_tables_fit(header, l1_size, l1_offset, refcount_offset, refcount_clusters)
    return header


def _check_extensions(head: bytes, offset: int) -> list[int]:
    seen = []
    while True:
        if offset + 8 > len(head):
            raise ImageRefused("The qcow2 header extensions are truncated or do not end.")
        kind, length = struct.unpack(">II", head[offset:offset + 8])
        if kind == EXTENSION_END:
            return seen
        if kind == EXTENSION_EXTERNAL_DATA_FILE:
            raise ImageRefused("The image names an external data file: refused.")
        if kind == EXTENSION_FULL_DISK_ENCRYPTION:
            raise ImageRefused("The image is encrypted: refused.")
        if kind == EXTENSION_BACKING_FORMAT:
            raise ImageRefused("The image names a backing file format (a backing file): refused.")
        seen.append(kind)
        offset += 8 + (length + 7) // 8 * 8


def _check_tables_fit(header: Qcow2Header, l1_size, l1_offset, refcount_offset, refcount_clusters) -> None:
    cluster_size = 1 << header.cluster_bits
    # Each L1 entry covers cluster_size / 8 L2 entries of one cluster each.
    needed_l1 = -(-header.virtual_size_bytes // (cluster_size * (cluster_size // 8)))
    if l1_size < needed_l1:
        raise ImageRefused("The qcow2 L1 table is too small for the virtual size (corrupt header).")
    tables = [(l1_offset, l1_size * 8, "L1 table"), (refcount_offset, refcount_clusters * cluster_size,
                                                     "refcount table")]
    for offset, length, name in tables:
        if offset % cluster_size:
            raise ImageRefused(f"The qcow2 {name} is not cluster aligned (corrupt header).")
        if offset + length > header.file_size_bytes:
            raise ImageRefused(f"The file ends before its {name}: it is truncated.")
