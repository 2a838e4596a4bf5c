"""The uncloud demo guest: a Debian cloud kernel with a busybox initramfs that reports its
IPv6 address on the serial console, and a bootable qcow2 disk made of the two.

See README.md for the kernel command line parameters and the UNCLOUD-* console lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .build import build_or_load

DIRECT_BOOT_CMDLINE = "console=ttyS0 no_timer_check panic=-1 quiet"


@dataclass(frozen=True)
class DemoGuest:
    kernel: Path
    initrd: Path
    disk_qcow2: Path
    kernel_version: str
    cmdline: str  # the default command line baked into the disk's boot loader


def build_demo_guest(cache_dir: Path | None = None) -> DemoGuest:
    """Build the demo guest, or return the cached build.

    The result lives in `<cache_dir>/demo-guest/<key>/`; cache_dir defaults to
    $UNCLOUD_CACHE_DIR or ~/.cache/uncloud. The key covers the package versions and the
    builder's source, so a new kernel or a changed init script gives a new build.
    Treat the files as read-only: boot the disk through a qcow2 overlay.
    """
    built = build_or_load(Path(cache_dir) if cache_dir else None)
    directory = Path(built["directory"])
    return DemoGuest(
        kernel=directory / "vmlinuz",
        initrd=directory / "initrd.gz",
        disk_qcow2=directory / "disk.qcow2",
        kernel_version=built["kernel_version"],
        cmdline=built["cmdline"],
    )


def guest_cmdline(ping: str | None = None, fetch: str | None = None,
                  poweroff: bool = False) -> str:
    """Kernel command line for booting the kernel and initrd directly (qemu -kernel)."""
    words = [DIRECT_BOOT_CMDLINE]
    for key, value in (("uc.ping", ping), ("uc.fetch", fetch)):
        if value is None:
            continue
        if not value or any(character.isspace() for character in value):
            raise ValueError(f"{key} must be one non-empty word, got {value!r}")
        words.append(f"{key}={value}")
    if poweroff:
        words.append("uc.poweroff=1")
    return " ".join(words)
