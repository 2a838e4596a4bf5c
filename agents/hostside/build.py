#!/usr/bin/env python3
"""Builds the host-side program's one artifact: a stdlib zipapp of the uncloud_hostside package.

    python3 agents/hostside/build.py OUT.pyz

The archive holds the package's modules and a top-level __main__.py, in sorted order, stored
(not compressed: deflate's output may change with zlib's version) with one fixed timestamp and
mode, so the same sources always give the same bytes and the same sha256: the checksum the control
plane verifies after shipping it and that host-info reports back. Standard library only.
"""

import hashlib
import io
import sys
import zipfile
from pathlib import Path

PACKAGE = "uncloud_hostside"
PACKAGE_DIR = Path(__file__).resolve().parent / PACKAGE
# zip cannot store times before 1980; any fixed time makes the bytes reproducible.
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
ENTRY_POINT = (
    b"import sys\n\n"
    b"from uncloud_hostside.__main__ import main\n\n"
    b"sys.exit(main())\n"
)


def archive_entries() -> list[tuple[str, bytes]]:
    """(name in the archive, bytes): the package's modules and the archive's entry point."""
    entries = [("__main__.py", ENTRY_POINT)]
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        entries.append((f"{PACKAGE}/{path.name}", path.read_bytes()))
    return sorted(entries)


def build_zipapp() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in archive_entries():
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.create_system = 3  # unix, so the mode below is what unzip shows
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: build.py OUT.pyz", file=sys.stderr)
        return 2
    data = build_zipapp()
    Path(argv[0]).write_bytes(data)
    print(hashlib.sha256(data).hexdigest(), argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
