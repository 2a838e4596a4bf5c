"""Publish the demo guest as a public image, so a new installation can boot something offline."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from django.conf import settings
from django.db import transaction

from accounts import audit
from images.choices import ImageFormat, ImageStatus, StorageBackend
from images.demo_guest import build_demo_guest
from images.models import Image

DEMO_IMAGE_NAME = "uncloud-demo"


def publish_demo_image() -> Image:
    """Build (or reuse) the demo guest and register it once as a public, available image."""
    existing = Image.objects.filter(project__isnull=True, name=DEMO_IMAGE_NAME).first()
    if existing is not None:
        return existing
    guest = build_demo_guest()
    store = Path(settings.DATA_DIR) / "images"
    store.mkdir(parents=True, exist_ok=True)
    target = store / f"{DEMO_IMAGE_NAME}-{guest.kernel_version}.qcow2"
    shutil.copyfile(guest.disk_qcow2, target)
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-f", "qcow2", "--output=json", str(target)], capture_output=True, text=True, check=True
        ).stdout
    )
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    with transaction.atomic():
        image = Image.objects.create(
            name=DEMO_IMAGE_NAME,
            description=f"Tiny demo guest (Debian cloud kernel {guest.kernel_version} + busybox); prints its "
            "IPv6 address on the serial console. Log in on the console as root, no password.",
            format=ImageFormat.QCOW2, status=ImageStatus.AVAILABLE, storage=StorageBackend.LOCAL,
            virtual_size_bytes=info["virtual-size"], file_size_bytes=target.stat().st_size,
            checksum_sha256=digest, location=str(target),
        )
        audit.record(None, "image.publish_demo", target=image, kernel=guest.kernel_version)
    return image
