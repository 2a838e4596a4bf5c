"""Small ISO 9660 images written directly, without spawning genisoimage: NoCloud config drives.

Running `genisoimage -joliet -rock` cost ~5 ms of every VM create (#21) for an image of a handful of
small files in one directory. This module writes such an image itself: regular files in the root
directory only, read alike by the Linux kernel (Rock Ridge names, or Joliet's with -o norock, or
the plain ISO names with -o norock,nojoliet), blkid (LABEL=<volume id> TYPE=iso9660), isoinfo and
cloud-init. Sectors (2048 bytes each, all fields as ECMA-119 says):

  0-15        system area, zeros
  16          primary volume descriptor: volume id, size, path tables, the root's directory record
  17          Joliet supplementary volume descriptor: the same with UCS-2 names, escape "%/E"
  18          volume descriptor set terminator
  19, 20      the primary path table, little-endian (L) then big-endian (M): one entry, the root
  21, 22      the Joliet path tables, the same
  23          the Rock Ridge continuation area: the ER entry naming RRIP 1.12, too big for the root's
              "." record, which points here with a CE entry
  24-         the primary root directory: ".", "..", then one record per file sorted by ISO name;
              each record holds its file's Rock Ridge entries (SUSP 1.12 system use fields):
              NM (the real name), PX (mode, links, owner, serial number), TF (times)
  then        the Joliet root directory: the same records with UCS-2 big-endian names, no SUSP
  then        the files' data, each from a sector of its own, in the primary directory's order
  then        150 sectors of zeros inside the volume, as genisoimage pads by default: busybox's
              volume_id (findfs, blkid: how the demo guest and small initramfs find LABEL=cidata)
              gives up on a device shorter than 68 KiB, and a config drive without it is ~58 KiB

Directory records never cross a sector (a record that would is moved to the next one). Plain ISO
names are ISO level 1: 8.3 upper-case d-characters with ";1", made unique by numbering. Files are
r--r--r-- and the directory r-xr-xr-x, owned by root, as genisoimage -r would have them. Every date
is the one timestamp given, so the same files make the same image, byte for byte."""

import os
import re
import struct
import time

SECTOR_SIZE = 2048
SYSTEM_AREA_SECTORS = 16
PRIMARY_SECTOR, JOLIET_SECTOR, TERMINATOR_SECTOR = 16, 17, 18
PRIMARY_PATH_TABLES = (19, 20)  # L, M
JOLIET_PATH_TABLES = (21, 22)
CONTINUATION_SECTOR = 23
ROOT_SECTOR = 24

STANDARD_ID = b"CD001"
PRIMARY, SUPPLEMENTARY, TERMINATOR = 1, 2, 255
JOLIET_UCS2_LEVEL_3 = b"%/E"
SYSTEM_ID = "LINUX"  # as genisoimage writes it; says nothing about the (empty) system area
APPLICATION_ID = "UNCLOUD HOSTSIDE"
DIRECTORY_FLAG = 0x02
SELF, PARENT = b"\x00", b"\x01"  # the identifiers of a directory's "." and ".." records

FILE_MODE = 0o100444  # S_IFREG | r--r--r--
DIRECTORY_MODE = 0o040555  # S_IFDIR | r-xr-xr-x
ROOT_SERIAL = 1

# RRIP 1.12 (IEEE P1282) as its ER entry names it; 1.12's PX carries a serial number (44 bytes).
RRIP_ID = b"IEEE_1282"
RRIP_DESCRIPTOR = b"THE IEEE 1282 PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS."
RRIP_SOURCE = b"PLEASE CONTACT THE IEEE STANDARDS DEPARTMENT, PISCATAWAY, NJ, USA FOR THE 1282 SPECIFICATION."
RRIP_VERSION = 1
TF_MODIFY_ACCESS_ATTRIBUTES = 0x0E  # TF flags: which times follow (7-byte dates)

NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
MAX_NAME = 64  # Joliet's limit, in characters
VOLUME_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,16}")  # 16: what Joliet's 32-byte field holds in UCS-2
MAX_FILE_SIZE = (1 << 32) - 1  # one extent, its length a 32-bit field
MAX_RECORD = 255  # a directory record's length is one byte
PADDING_SECTORS = 150
LATEST_TIMESTAMP = 5_869_583_999  # 2155-12-31 23:59:59 UTC: a record's year is 1900 + one byte


def both_endian_16(value):
    return struct.pack("<H", value) + struct.pack(">H", value)


def both_endian_32(value):
    return struct.pack("<I", value) + struct.pack(">I", value)


def sectors_for(size):
    return -(-size // SECTOR_SIZE)


def record_date(timestamp):
    """ECMA-119 9.1.5 (also Rock Ridge TF's short form): years since 1900, month, day, hour,
    minute, second, offset from UTC in 15-minute steps."""
    moment = time.gmtime(timestamp)
    return bytes([moment.tm_year - 1900, moment.tm_mon, moment.tm_mday, moment.tm_hour,
                  moment.tm_min, moment.tm_sec, 0])


def volume_date(timestamp):
    """ECMA-119 8.4.26.1: 16 digits (to hundredths of a second) and the UTC offset byte."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(timestamp)).encode() + b"00\x00"


UNSET_VOLUME_DATE = b"0" * 16 + b"\x00"


def padded_text(text, length, joliet):
    """An identifier field: ASCII padded with spaces, or for Joliet UCS-2 big-endian padded with
    UCS-2 spaces (an odd length ends with one zero byte, as genisoimage writes it)."""
    if joliet:
        data = text.encode("utf-16-be")
        data += b"\x00 " * ((length - len(data)) // 2)
    else:
        data = text.encode("ascii")
        data += b" " * (length - len(data))
    return data + b"\x00" * (length - len(data))


# --- System Use Sharing Protocol and Rock Ridge entries: signature, length, version, data -----------

def susp_entry(signature, data, version=1):
    return signature + bytes([4 + len(data), version]) + data


def sp_entry():
    """SUSP 5.3: SUSP is in use, first in the root's "." record; check bytes BE EF, skip 0."""
    return susp_entry(b"SP", b"\xbe\xef\x00")


def ce_entry(sector, offset, length):
    """SUSP 5.1: more system use entries in a continuation area."""
    return susp_entry(b"CE", both_endian_32(sector) + both_endian_32(offset) + both_endian_32(length))


def er_entry():
    """SUSP 5.5: which extension the entries belong to (RRIP 1.12). Linux takes Rock Ridge as
    present once it reads this entry, found through the root's "." record."""
    return susp_entry(b"ER", bytes([len(RRIP_ID), len(RRIP_DESCRIPTOR), len(RRIP_SOURCE), RRIP_VERSION])
                      + RRIP_ID + RRIP_DESCRIPTOR + RRIP_SOURCE)


def px_entry(mode, links, serial):
    """RRIP 4.1.1: POSIX mode, link count, uid, gid (root), serial number."""
    return susp_entry(b"PX", both_endian_32(mode) + both_endian_32(links) + both_endian_32(0)
                      + both_endian_32(0) + both_endian_32(serial))


def nm_entry(name):
    """RRIP 4.1.4: the alternate (real) name, in one entry (flags 0)."""
    return susp_entry(b"NM", b"\x00" + name.encode("ascii"))


def tf_entry(timestamp):
    """RRIP 4.1.6: modification, access and attribute change times."""
    date = record_date(timestamp)
    return susp_entry(b"TF", bytes([TF_MODIFY_ACCESS_ATTRIBUTES]) + date * 3)


# --- directories ------------------------------------------------------------------------------------

def directory_record(identifier, sector, size, date, directory=False, system_use=b""):
    """ECMA-119 9.1: a directory record. An even-length identifier is followed by a padding byte,
    and the whole record is made even by a zero byte after the system use field if needed."""
    head_length = 33 + len(identifier) + (1 - len(identifier) % 2)
    length = head_length + len(system_use) + (len(system_use) % 2)
    if length > MAX_RECORD:
        raise ValueError(f"a directory record of {length} bytes does not fit the format's 255")
    record = (bytes([length, 0]) + both_endian_32(sector) + both_endian_32(size) + date
              + bytes([DIRECTORY_FLAG if directory else 0, 0, 0]) + both_endian_16(1)
              + bytes([len(identifier)]) + identifier)
    record += b"\x00" * (head_length - len(record)) + system_use
    return record + b"\x00" * (length - len(record))


def sector_count_of_records(lengths):
    """How many sectors a directory of records of these lengths takes, none crossing a sector."""
    sectors, used = 1, 0
    for length in lengths:
        if used + length > SECTOR_SIZE:
            sectors, used = sectors + 1, 0
        used += length
    return sectors


def directory_extent(records):
    """The records laid into whole sectors, each record within one sector, zeros after."""
    extent = bytearray()
    for record in records:
        room = SECTOR_SIZE - len(extent) % SECTOR_SIZE
        if len(record) > room:
            extent += b"\x00" * room
        extent += record
    extent += b"\x00" * (-len(extent) % SECTOR_SIZE)
    return bytes(extent)


def path_table(root_sector, byte_order):
    """ECMA-119 9.4: one entry, the root (identifier 0, its own parent: directory number 1)."""
    return struct.pack(f"{byte_order}BBIH", 1, 0, root_sector, 1) + b"\x00\x00"  # id + padding


def volume_descriptor(kind, volume_id, total_sectors, path_tables, root_record, timestamp, joliet):
    """ECMA-119 8.4 (primary) or 8.5 (supplementary: Joliet's escape sequence, UCS-2 text)."""
    def text(value, length):
        return padded_text(value, length, joliet)
    date = volume_date(timestamp)
    descriptor = (bytes([kind]) + STANDARD_ID + b"\x01\x00"
                  + text(SYSTEM_ID, 32) + text(volume_id, 32) + bytes(8)
                  + both_endian_32(total_sectors)
                  + (JOLIET_UCS2_LEVEL_3 if joliet else b"").ljust(32, b"\x00")
                  + both_endian_16(1) + both_endian_16(1) + both_endian_16(SECTOR_SIZE)
                  + both_endian_32(len(path_table(0, "<")))
                  + struct.pack("<II", path_tables[0], 0) + struct.pack(">II", path_tables[1], 0)
                  + root_record
                  + text("", 128) * 3 + text(APPLICATION_ID, 128)  # volume set, publisher, preparer
                  + text("", 37) * 3  # copyright, abstract, bibliographic file ids: none
                  + date + date + UNSET_VOLUME_DATE + date  # created, modified, expires, effective
                  + b"\x01\x00")  # file structure version, reserved
    return descriptor.ljust(SECTOR_SIZE, b"\x00")


def terminator_descriptor():
    return (bytes([TERMINATOR]) + STANDARD_ID + b"\x01").ljust(SECTOR_SIZE, b"\x00")


# --- names ------------------------------------------------------------------------------------------

def check_files(files):
    for name, data in files.items():
        if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > MAX_NAME:
            raise ValueError(f"file name {name!r}: 1 to {MAX_NAME} of A-Z a-z 0-9 . _ - "
                             "(not starting with a dot)")
        if not isinstance(data, (bytes, bytearray)):
            raise ValueError(f"{name}: contents must be bytes")
        if len(data) > MAX_FILE_SIZE:
            raise ValueError(f"{name}: {len(data)} bytes is more than one ISO 9660 extent holds")


def d_characters(text):
    return re.sub(r"[^A-Z0-9_]", "_", text.upper())


def iso_level_1_names(names):
    """{real name: "NAME.EXT;1"}: 8 and 3 d-characters split at the last dot. Names that come out
    alike are numbered from the end of the 8 ("USER_DAT", "USER_DA1"), in sorted order."""
    taken, chosen = set(), {}
    for name in sorted(names):
        stem, dot, extension = name.rpartition(".")
        if not dot:
            stem, extension = name, ""
        stem, extension = d_characters(stem)[:8], d_characters(extension)[:3]
        candidate, number = stem, 0
        while f"{candidate}.{extension}" in taken:
            number += 1
            suffix = str(number)
            candidate = stem[:8 - len(suffix)] + suffix
        taken.add(f"{candidate}.{extension}")
        chosen[name] = f"{candidate}.{extension};1"
    return chosen


# --- the image --------------------------------------------------------------------------------------

def iso9660_image(files, volume_id, timestamp=0):
    """The bytes of an ISO 9660 image (Rock Ridge and Joliet) holding files, {name: bytes}, in its
    root directory, labelled volume_id; every date is timestamp (seconds since 1970, UTC)."""
    written, length = iso9660_sectors(files, volume_id, timestamp)
    return (bytes(SYSTEM_AREA_SECTORS * SECTOR_SIZE) + written).ljust(length, b"\x00")


def iso9660_sectors(files, volume_id, timestamp):
    """What an image holds from sector 16 (the system area before it is zeros) to its last data,
    and the image's whole length (zeros after that data)."""
    if not isinstance(volume_id, str) or not VOLUME_ID_RE.fullmatch(volume_id):
        raise ValueError("volume id: 1 to 16 of A-Z a-z 0-9 . _ -")
    if not isinstance(timestamp, int) or not 0 <= timestamp <= LATEST_TIMESTAMP:
        raise ValueError("timestamp: whole seconds from 1970 to 2155")
    check_files(files)
    iso_names = iso_level_1_names(files)
    date = record_date(timestamp)
    file_order = sorted(files, key=lambda name: iso_names[name])  # ECMA-119 9.3: by identifier
    serials = {name: ROOT_SERIAL + 1 + index for index, name in enumerate(file_order)}

    def primary_file_records(sectors):
        return [directory_record(iso_names[name].encode("ascii"), sectors[name], len(files[name]), date,
                                 system_use=nm_entry(name)
                                 + px_entry(FILE_MODE, 1, serials[name]) + tf_entry(timestamp))
                for name in file_order]

    def joliet_file_records(sectors):
        return [directory_record(name.encode("utf-16-be"), sectors[name], len(files[name]), date)
                for name in sorted(files, key=lambda name: name.encode("utf-16-be"))]

    root_rock_ridge = px_entry(DIRECTORY_MODE, 2, ROOT_SERIAL) + tf_entry(timestamp)
    continuation = er_entry()

    def primary_records(root_sectors, sectors):
        root_size = root_sectors * SECTOR_SIZE
        self_use = sp_entry() + root_rock_ridge + ce_entry(CONTINUATION_SECTOR, 0, len(continuation))
        return [directory_record(SELF, ROOT_SECTOR, root_size, date, True, self_use),
                directory_record(PARENT, ROOT_SECTOR, root_size, date, True, root_rock_ridge),
                *primary_file_records(sectors)]

    def joliet_records(joliet_root, joliet_sectors, sectors):
        size = joliet_sectors * SECTOR_SIZE
        return [directory_record(SELF, joliet_root, size, date, True),
                directory_record(PARENT, joliet_root, size, date, True),
                *joliet_file_records(sectors)]

    # Record lengths do not depend on locations: size the directories with placeholder numbers.
    placeholder = dict.fromkeys(files, 0)
    root_sectors = sector_count_of_records(len(r) for r in primary_records(1, placeholder))
    joliet_root = ROOT_SECTOR + root_sectors
    joliet_sectors = sector_count_of_records(len(r) for r in joliet_records(0, 1, placeholder))
    next_sector = joliet_root + joliet_sectors
    # Each file's data from a sector of its own; an empty file points where the next data would
    # start, as genisoimage's do (its length says there is nothing to read there).
    sectors = {}
    for name in file_order:
        sectors[name] = next_sector
        next_sector += sectors_for(len(files[name]))
    total_sectors = next_sector + PADDING_SECTORS

    primary_root = directory_extent(primary_records(root_sectors, sectors))
    joliet_root_extent = directory_extent(joliet_records(joliet_root, joliet_sectors, sectors))
    image = bytearray((next_sector - SYSTEM_AREA_SECTORS) * SECTOR_SIZE)

    def put(sector, data):
        start = (sector - SYSTEM_AREA_SECTORS) * SECTOR_SIZE
        image[start:start + len(data)] = data

    put(PRIMARY_SECTOR, volume_descriptor(
        PRIMARY, volume_id, total_sectors, PRIMARY_PATH_TABLES,
        directory_record(SELF, ROOT_SECTOR, len(primary_root), date, True), timestamp, joliet=False))
    put(JOLIET_SECTOR, volume_descriptor(
        SUPPLEMENTARY, volume_id, total_sectors, JOLIET_PATH_TABLES,
        directory_record(SELF, joliet_root, len(joliet_root_extent), date, True), timestamp, joliet=True))
    put(TERMINATOR_SECTOR, terminator_descriptor())
    for tables, root in ((PRIMARY_PATH_TABLES, ROOT_SECTOR), (JOLIET_PATH_TABLES, joliet_root)):
        put(tables[0], path_table(root, "<"))
        put(tables[1], path_table(root, ">"))
    put(CONTINUATION_SECTOR, continuation)
    put(ROOT_SECTOR, primary_root)
    put(joliet_root, joliet_root_extent)
    for name in file_order:
        put(sectors[name], files[name])
    return image, total_sectors * SECTOR_SIZE


def write_iso9660(path, files, volume_id, timestamp=0):
    """Create path (it must not exist) holding the image of files, flushed to disk before this
    returns so that a rename after it never publishes an empty file after a crash. The zeros of
    the system area and the padding are holes: nothing to write."""
    written, length = iso9660_sectors(files, volume_id, timestamp)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        offset = SYSTEM_AREA_SECTORS * SECTOR_SIZE
        view = memoryview(written)
        while view:
            done = os.pwrite(descriptor, view, offset)
            view, offset = view[done:], offset + done
        os.ftruncate(descriptor, length)
        os.fdatasync(descriptor)
    finally:
        os.close(descriptor)
