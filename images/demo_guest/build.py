"""Build the demo guest (kernel, busybox initramfs, bootable qcow2) from Debian packages.

Needs apt (for `apt-get download`), dpkg-deb, kmod (modprobe/depmod), dosfstools, mtools,
syslinux and qemu-utils on the building machine. Everything else comes from the packages.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
INIT_SCRIPT = HERE / "init.sh"

KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"
# rdisc6 is the small tool that can read the RDNSS option of a router advertisement;
# it is dynamically linked, so glibc comes along.
RDISC6_PACKAGES = ("ndisc6", "libc6")

# Loaded in this order after expanding each one's dependencies with modprobe.
GUEST_MODULES = (
    "virtio_pci",  # the PCI transport every other virtio driver sits on
    "virtio_net",
    "virtio_blk",
    "virtio_rng",  # entropy, so nothing in the guest waits for the random pool
    "button",  # ACPI power button, what QMP system_powerdown presses
    "evdev",  # /dev/input/event*, where busybox acpid listens for that button
    "vfat", "nls_cp437", "nls_ascii", "nls_utf8",  # a vfat config drive
    "isofs",  # an iso9660 config drive
)

DEFAULT_DISK_CMDLINE = "console=tty0 console=ttyS0 no_timer_check panic=-1 quiet"
APT_AS_ROOT = ["-o", "APT::Sandbox::User=root"]  # else apt warns that _apt cannot write here


def default_cache_root() -> Path:
    return Path(os.environ.get("UNCLOUD_CACHE_DIR") or Path.home() / ".cache" / "uncloud")


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    finished = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if finished.returncode != 0:
        raise RuntimeError(f"{command} failed ({finished.returncode}): {finished.stderr.strip()}")
    return finished


def candidate_versions(packages: list[str]) -> dict[str, str]:
    versions: dict[str, str] = {}
    package = None
    for line in run(["apt-cache", "policy", *packages]).stdout.splitlines():
        if not line.startswith(" "):
            package = line.strip().rstrip(":")
        elif line.strip().startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            if version and version != "(none)":
                versions[package] = version
    missing = [p for p in packages if p not in versions]
    if missing:
        raise RuntimeError(f"apt knows no installable version of {missing} (apt-get update?)")
    return {package: versions[package] for package in packages}


def kernel_package_name() -> str:
    for line in run(["apt-cache", "depends", KERNEL_META_PACKAGE]).stdout.splitlines():
        name = line.strip().removeprefix("Depends:").strip()
        if line.strip().startswith("Depends:") and name.startswith("linux-image-"):
            return name
    raise RuntimeError(f"{KERNEL_META_PACKAGE} depends on no linux-image package")


def apt_fingerprint() -> str:
    """Changes whenever apt's view of the available packages may have changed."""
    watched = [Path("/var/lib/dpkg/status"), *sorted(Path("/var/lib/apt/lists").glob("*"))]
    watched += sorted(Path("/etc/apt").rglob("*"))
    stats = [(str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in watched if p.exists()]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()


def package_versions(base: Path) -> dict[str, str]:
    """The exact packages a build uses; part of the cache key. Asking apt takes about a
    second (this machine has no pkgcache.bin), so the answer is remembered until apt's
    lists change: that keeps a cached build_demo_guest() instant."""
    remembered = base / ".package-versions.json"
    fingerprint = apt_fingerprint()
    try:
        saved = json.loads(remembered.read_text())
        if saved["fingerprint"] == fingerprint:
            return saved["versions"]
    except (OSError, ValueError, KeyError):
        pass
    versions = candidate_versions([kernel_package_name(), BUSYBOX_PACKAGE, *RDISC6_PACKAGES])
    base.mkdir(parents=True, exist_ok=True)
    scratch = remembered.with_name(f"{remembered.name}.{os.getpid()}")
    scratch.write_text(json.dumps({"fingerprint": fingerprint, "versions": versions}))
    os.replace(scratch, remembered)
    return versions


def cache_key(versions: dict[str, str]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(versions, sort_keys=True).encode())
    for source in (INIT_SCRIPT, Path(__file__).resolve()):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def download_and_extract(packages: dict[str, str], work: Path) -> Path:
    """Fetch the exact package versions and unpack them all into one tree."""
    debs = work / "debs"
    tree = work / "tree"
    debs.mkdir()
    tree.mkdir()
    pinned = [f"{package}={version}" for package, version in packages.items()]
    run(["apt-get", *APT_AS_ROOT, "download", *pinned], cwd=debs)
    for deb in sorted(debs.glob("*.deb")):
        run(["dpkg-deb", "-x", str(deb), str(tree)])
    return tree


def module_load_order(tree: Path, kernel_version: str) -> list[Path]:
    """Module files in an order where each one's dependencies come first."""
    run(["depmod", "-b", str(tree), kernel_version])
    ordered: list[Path] = []
    for module in GUEST_MODULES:
        shown = run(["modprobe", "-d", str(tree), "-S", kernel_version, "--show-depends", module])
        for line in shown.stdout.splitlines():
            words = line.split()
            if words[:1] == ["insmod"] and Path(words[1]) not in ordered:
                ordered.append(Path(words[1]))
    return ordered


def module_name(path: Path) -> str:
    return path.name.removesuffix(".ko")


RDISC6_FILES = {  # path in the initramfs: path in the packages (before the /usr merge)
    "bin/rdisc6": "bin/rdisc6",
    "lib64/ld-linux-x86-64.so.2": "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "lib/x86_64-linux-gnu/libc.so.6": "lib/x86_64-linux-gnu/libc.so.6",
}


def copy_rdisc6(tree: Path, root: Path) -> None:
    """rdisc6 and the glibc pieces it loads, at the paths its ELF header and ld.so use."""
    for target, source in RDISC6_FILES.items():
        found = tree / source
        if not found.exists():  # a usr-merged package keeps it under usr/
            found = tree / "usr" / source
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(found, root / target)


def newc_archive(root: Path, busybox: Path) -> bytes:
    # Sorted input gives the same archive for the same files.
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    listing = "\n".join(["."] + names) + "\n"
    archive = subprocess.run([str(busybox), "cpio", "-o", "-H", "newc"], cwd=root,
                             input=listing.encode(), capture_output=True, check=True)
    return archive.stdout


def build_initrd(tree: Path, kernel_version: str, work: Path) -> Path:
    root = work / "initramfs"
    for directory in ("bin", "dev", "proc", "sys", "tmp", "run", "etc", "mnt", "root",
                      "lib/modules"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    busybox = root / "bin" / "busybox"
    shutil.copy2(tree / "bin" / "busybox", busybox)
    modules = module_load_order(tree, kernel_version)
    for module in modules:
        shutil.copy2(module, root / "lib" / "modules" / module.name)
    (root / "etc" / "uncloud-modules").write_text("".join(f"{module_name(m)}\n" for m in modules))
    copy_rdisc6(tree, root)
    shutil.copy2(INIT_SCRIPT, root / "init")
    (root / "init").chmod(0o755)
    initrd = work / "initrd.gz"
    initrd.write_bytes(gzip.compress(newc_archive(root, busybox), compresslevel=9, mtime=0))
    return initrd


def syslinux_config(cmdline: str) -> str:
    return (
        "DEFAULT uncloud\nPROMPT 0\nTIMEOUT 0\n"
        "LABEL uncloud\n  LINUX /vmlinuz\n  INITRD /initrd.gz\n"
        f"  APPEND {cmdline}\n"
    )


def build_disk(kernel: Path, initrd: Path, cmdline: str, work: Path) -> Path:
    """A whole-disk FAT filesystem with syslinux in its boot sector (BIOS boots it like a
    floppy-style superfloppy): no partition table and no loop mounts needed."""
    raw = work / "disk.raw"
    payload_mib = (kernel.stat().st_size + initrd.stat().st_size) // 2**20
    with raw.open("wb") as image:
        image.truncate((payload_mib + 4) * 2**20)
    run(["mkfs.vfat", "-n", "UNCLOUD", str(raw)])
    run(["syslinux", "--install", str(raw)])
    config = work / "syslinux.cfg"
    config.write_text(syslinux_config(cmdline))
    run(["mcopy", "-i", str(raw), str(kernel), "::vmlinuz"])
    run(["mcopy", "-i", str(raw), str(initrd), "::initrd.gz"])
    run(["mcopy", "-i", str(raw), str(config), "::syslinux.cfg"])
    qcow2 = work / "disk.qcow2"
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)])
    return qcow2


def build_into(output: Path, versions: dict[str, str], work: Path) -> dict:
    """Build every artifact into the empty directory `output`; return the metadata."""
    tree = download_and_extract(versions, work)
    kernel_version = next(p for p in versions if p.startswith("linux-image-")).removeprefix(
        "linux-image-")
    shutil.copy2(tree / "boot" / f"vmlinuz-{kernel_version}", output / "vmlinuz")
    initrd = build_initrd(tree, kernel_version, work)
    shutil.copy2(initrd, output / "initrd.gz")
    disk = build_disk(output / "vmlinuz", output / "initrd.gz", DEFAULT_DISK_CMDLINE, work)
    shutil.copy2(disk, output / "disk.qcow2")
    return {"kernel_version": kernel_version, "cmdline": DEFAULT_DISK_CMDLINE,
            "packages": versions}


METADATA = "demo-guest.json"


def build_or_load(cache_root: Path | None) -> dict:
    """Return the metadata of the cached build, building it first if needed; the
    returned dict also holds `directory`, where vmlinuz, initrd.gz and disk.qcow2 are."""
    base = (cache_root or default_cache_root()) / "demo-guest"
    versions = package_versions(base)
    final = base / cache_key(versions)
    if not (final / METADATA).exists():
        base.mkdir(parents=True, exist_ok=True)
        # One builder at a time; the others wait and then find the result.
        with open(base / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (final / METADATA).exists():
                build_atomically(final, versions)
    metadata = json.loads((final / METADATA).read_text())
    return {**metadata, "directory": str(final)}


BUILD_TOOLS = ("apt-get", "dpkg-deb", "depmod", "modprobe", "mkfs.vfat", "syslinux", "mcopy",
               "qemu-img")


def build_atomically(final: Path, versions: dict[str, str]) -> None:
    """Build into `final`; the caller holds the lock."""
    missing = [tool for tool in BUILD_TOOLS if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"building the demo guest needs {', '.join(missing)} "
                           "(apt-get install kmod dosfstools mtools syslinux qemu-utils)")
    # Scratch directories of builders that died: nobody else builds while we hold the lock.
    for stale in final.parent.glob(".build-*"):
        shutil.rmtree(stale, ignore_errors=True)
    # The scratch directory sits beside the result so the rename stays on one filesystem;
    # a crash leaves only a .build-* directory, never a half-filled key directory.
    scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=final.parent))
    try:
        output = scratch / "output"
        work = scratch / "work"
        output.mkdir()
        work.mkdir()
        metadata = build_into(output, versions, work)
        (output / METADATA).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        if final.exists():  # leftovers of an older layout without metadata
            shutil.rmtree(final)
        os.rename(output, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
