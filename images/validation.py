"""Validation of an uploaded image: PENDING -> VALIDATING -> AVAILABLE | REJECTED (with `error`).

Runs as the one-step Operation `image.validate`, so a worker that dies mid-check loses nothing
(beat resumes it; the step starts again from the upload). Order, from DESIGN.md 5:

1. a raw upload (format=raw) is converted to qcow2 first (`qemu-img convert -f raw`: a raw
   file has no header that could name other files);
2. the pure-Python header inspector (images/inspector.py) reads the qcow2;
3. only then `qemu-img info` and `qemu-img check`, always with `-f qcow2`, under memory and CPU
   limits; info must agree with the inspector (no backing file, no data file);
4. the sha256 of the file we keep, and the move into the image store.

A refused image keeps no file anywhere: the upload, the converted file and any half-moved copy
are removed, and the row says why.
"""

import hashlib
import json
import logging
import os
import resource
import subprocess
from pathlib import Path

from django.conf import settings
from django.db import transaction

from agents.operations import PermanentStepError, Step, TransientStepError, register_workflow
from images.choices import ImageFormat, ImageStatus, UploadFormat
from images.inspector import ImageRefused, inspect_qcow2
from images.models import Image

log = logging.getLogger(__name__)

QEMU_IMG_TIMEOUT_S = 3600


def upload_dir() -> Path:
    directory = Path(settings.UNCLOUD_IMAGE_UPLOAD_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def store_dir() -> Path:
    directory = Path(settings.UNCLOUD_IMAGE_STORE_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def upload_path(image: Image) -> Path:
    return upload_dir() / f"{image.uuid}.upload"


def converted_path(image: Image) -> Path:
    return upload_dir() / f"{image.uuid}.converted.qcow2"


def stored_path(image: Image) -> Path:
    return store_dir() / f"{image.uuid}.qcow2"


def max_virtual_size_bytes() -> int:
    return settings.UNCLOUD_IMAGE_MAX_VIRTUAL_GIB * 1024**3


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _limit_resources():
    # Runs in the child before exec: a hostile image must not eat the control plane's memory or CPU.
    memory = settings.UNCLOUD_QEMU_IMG_MEMORY_MIB * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = settings.UNCLOUD_QEMU_IMG_CPU_SECONDS
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))


def qemu_img(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT_S,
                              preexec_fn=_limit_resources)
    except FileNotFoundError:
        raise PermanentStepError("qemu-img is not installed on the control plane (Debian package qemu-utils).") from None
    except subprocess.TimeoutExpired:
        raise ImageRefused(f"Checking the image took longer than {QEMU_IMG_TIMEOUT_S} s.") from None


def convert_raw(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    result = qemu_img("convert", "-f", "raw", "-O", "qcow2", str(source), str(target))
    if result.returncode != 0:
        target.unlink(missing_ok=True)
        raise ImageRefused(f"The raw image could not be converted to qcow2: {result.stderr.strip()[-500:]}")


def check_with_qemu_img(path: Path, header) -> dict:
    """qemu-img info and check (-f qcow2), after the inspector passed. Returns info."""
    result = qemu_img("info", "-f", "qcow2", "--output=json", str(path))
    if result.returncode != 0:
        raise ImageRefused(f"qemu-img cannot read the image: {result.stderr.strip()[-500:]}")
    info = json.loads(result.stdout)
    if info.get("format") != "qcow2":
        raise ImageRefused("qemu-img does not read the image as qcow2.")
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise ImageRefused("The image names a backing file: refused.")
    if (info.get("format-specific") or {}).get("data", {}).get("data-file"):
        raise ImageRefused("The image names an external data file: refused.")
    if int(info.get("virtual-size", -1)) != header.virtual_size_bytes:
        raise ImageRefused("qemu-img and the header disagree about the virtual size.")
    result = qemu_img("check", "-f", "qcow2", "--output=json", str(path))
    # 0 clean, 3 only leaked clusters (wasted space, harmless); 2 corruption, 1 check impossible.
    if result.returncode not in (0, 3):
        try:
            report = json.loads(result.stdout)
        except ValueError:
            report = {}
        problems = report.get("corruptions", 0) + report.get("check-errors", 0)
        first_error = next((line for line in result.stderr.splitlines() if line.strip()), "")
        raise ImageRefused(
            "The image is truncated or corrupt" + (f" ({problems} errors" if problems else " (")
            + (f"; first: {first_error.strip()[:300]})" if first_error else ")") + "."
        )
    return info


def remove_image_files(image: Image) -> None:
    for path in (upload_path(image), converted_path(image), stored_path(image),
                 stored_path(image).with_suffix(".qcow2.tmp")):
        path.unlink(missing_ok=True)


def validate_image(image: Image, source_format: str) -> Image:
    """Validate the upload of `image` and make it AVAILABLE, or REJECTED with the reason."""
    source = upload_path(image)
    if not source.exists():
        if image.status == ImageStatus.AVAILABLE:
            return image  # a repeated step after success
        return reject(image, "The upload is missing (it was interrupted); upload the image again.")
    try:
        path = source
        if source_format == UploadFormat.RAW:
            path = converted_path(image)
            convert_raw(source, path)
        header = inspect_qcow2(str(path), max_virtual_size_bytes())
        check_with_qemu_img(path, header)
        checksum = file_sha256(path)
        target = stored_path(image)
        temporary = target.with_suffix(".qcow2.tmp")
        temporary.unlink(missing_ok=True)
        if path == source:
            os.link(path, temporary)  # the upload itself; it is removed once the row says AVAILABLE
        else:
            os.replace(path, temporary)
        os.chmod(temporary, 0o444)
        os.replace(temporary, target)
    except ImageRefused as refusal:
        return reject(image, str(refusal))
    except OSError as error:
        remove_image_files(image)
        raise TransientStepError(f"Could not store the image: {error}") from None
    with transaction.atomic():
        Image.objects.filter(pk=image.pk).update(
            status=ImageStatus.AVAILABLE, format=ImageFormat.QCOW2, virtual_size_bytes=header.virtual_size_bytes,
            file_size_bytes=target.stat().st_size, checksum_sha256=checksum, location=str(target), error="",
        )
    for leftover in (source, converted_path(image)):
        leftover.unlink(missing_ok=True)
    image.refresh_from_db()
    return image


def reject(image: Image, reason: str) -> Image:
    remove_image_files(image)
    Image.objects.filter(pk=image.pk).update(status=ImageStatus.REJECTED, error=reason, location="")
    image.refresh_from_db()
    log.info("image %s rejected: %s", image.uuid, reason)
    return image


def _validate_step(operation):
    image = Image.objects.filter(uuid=operation.target_uuid).first()
    if image is None:
        return {"image": "deleted meanwhile"}
    image = validate_image(image, operation.payload.get("source_format", UploadFormat.QCOW2))
    return {"status": image.status, "error": image.error}


def _validation_failed(operation):
    image = Image.objects.filter(uuid=operation.target_uuid).first()
    if image is not None and image.status != ImageStatus.AVAILABLE:
        reject(image, f"Validation failed: {operation.error}")


register_workflow("image.validate", [Step("validate", _validate_step)], on_failure=_validation_failed)
