"""Sweeping what images leave behind (beat task images.sweep, every UNCLOUD_IMAGE_SWEEP_INTERVAL s).

- Upload files in UNCLOUD_IMAGE_UPLOAD_DIR that nobody has written for UNCLOUD_UPLOAD_STALE_SECONDS:
  `incoming-*.part` of uploads whose request died, and `<image uuid>.upload` / `.converted.qcow2`
  left by images that are no longer being validated.
- Base images a host caches (`images/<sha256>.qcow2`) that no disk uses any more, once they have
  stayed unused for UNCLOUD_BASE_IMAGE_GRACE_SECONDS (an UnusedBaseImage row remembers since when).
  "Used" is asked of both sides: the host's disk records and the database's disks of that host
  (a VM being created there counts before its disk exists). The host's image-delete refuses a base
  a disk record still names, so a disk that appeared in between keeps it.
"""

import logging
import os
import time
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from agents.choices import TERMINAL_OPERATION_STATES
from agents.hostagent import HostError
from agents.hosts import agent_for
from agents.models import Host, Operation
from images.choices import ImageStatus
from images.models import Disk, Image, UnusedBaseImage
from images.validation import upload_dir

log = logging.getLogger(__name__)

PER_IMAGE_SUFFIXES = (".upload", ".converted.qcow2")


def sweep_uploads() -> list[str]:
    """Remove stale upload files; the names removed."""
    limit = time.time() - settings.UNCLOUD_UPLOAD_STALE_SECONDS
    validating = {str(uuid) for uuid in Image.objects.filter(status=ImageStatus.VALIDATING).values_list(
        "uuid", flat=True)}
    removed = []
    with os.scandir(upload_dir()) as entries:
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                continue
            if entry.name.startswith("incoming-") and entry.name.endswith(".part"):
                orphaned = True
            elif entry.name.endswith(PER_IMAGE_SUFFIXES):
                orphaned = entry.name.split(".", 1)[0] not in validating
            else:
                continue
            if orphaned and entry.stat(follow_symlinks=False).st_mtime < limit:
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                removed.append(entry.name)
    if removed:
        log.info("removed stale uploads: %s", ", ".join(sorted(removed)))
    return sorted(removed)


def base_images_wanted_on(host: Host) -> set[str]:
    """Checksums of the images that disks of this host (or of VMs placed on it) are made from."""
    return set(
        Disk.objects.filter(Q(host=host) | Q(vm__host=host), image__isnull=False)
        .values_list("image__checksum_sha256", flat=True)
    )


def host_is_busy(host: Host) -> bool:
    # A disk being made on the host right now may be between shipping its base and using it.
    return Operation.objects.filter(host=host).exclude(state__in=TERMINAL_OPERATION_STATES).exists()


def sweep_base_images(host: Host) -> dict:
    """Forget or remove this host's unused base images; what it did."""
    agent = agent_for(host)
    listed = agent.call("image-list")["images"]
    wanted = base_images_wanted_on(host)
    unused = {item["sha256"]: item for item in listed if not item["disks"] and item["sha256"] not in wanted}
    UnusedBaseImage.objects.filter(host=host).exclude(sha256__in=list(unused)).delete()
    now = timezone.now()
    grace = timedelta(seconds=settings.UNCLOUD_BASE_IMAGE_GRACE_SECONDS)
    removed, kept = [], []
    for sha256, item in sorted(unused.items()):
        row, _ = UnusedBaseImage.objects.get_or_create(
            host=host, sha256=sha256, defaults={"unused_since": now, "size_bytes": item["size_bytes"]})
        if now - row.unused_since < grace or sha256 in base_images_wanted_on(host) or host_is_busy(host):
            kept.append(sha256)
            continue
        try:
            agent.call("image-delete", {"sha256": sha256})
        except HostError as error:
            if error.code != "in_use":
                raise
            kept.append(sha256)  # a disk took it up again in between
        else:
            removed.append(sha256)
            log.info("host %s: removed base image %s (unused since %s)", host.name, sha256, row.unused_since)
        row.delete()
    return {"host": host.name, "removed": removed, "kept_unused": kept}
