"""Uploading images through the portal page in a real browser: the progress bar, then validation by a
real Celery worker (the pure-Python header inspector and qemu-img) until the image is available, or
refused with the reason on its page.

Needs Redis and PostgreSQL (a Celery worker on a queue of its own) and qemu-img.
"""

import re
import subprocess

import pytest
from playwright.sync_api import expect

from images.choices import ImageStatus
from images.models import Image
from tests.browser.conftest import log_in
from tests.lab.waiting import wait_for


@pytest.fixture
def image_dirs(settings, tmp_path):
    # The web process (the live server, in this process) and the worker must see the same directories.
    store, uploads = tmp_path / "store", tmp_path / "uploads"
    settings.UNCLOUD_IMAGE_STORE_DIR, settings.UNCLOUD_IMAGE_UPLOAD_DIR = store, uploads
    return store, uploads


@pytest.fixture
def image_worker(celery_processes, image_dirs):
    store, uploads = image_dirs
    processes = celery_processes(UNCLOUD_IMAGE_STORE_DIR=store, UNCLOUD_IMAGE_UPLOAD_DIR=uploads)
    processes.worker()
    return processes


def files_in(directory):
    return sorted(path.name for path in directory.iterdir()) if directory.exists() else []


def upload(page, shot, path, name: str):
    page.goto("/images/upload/")
    page.fill("#id_name", name)
    page.select_option("#id_format", "qcow2")
    page.set_input_files("#id_file", str(path))
    shot(page, f"{name}-1-chosen")
    page.click("#upload-form button[type=submit]")
    expect(page.locator("#upload-progress")).to_be_visible()
    expect(page.locator("#upload-result")).to_contain_text("Uploaded; now validating")
    # The whole file went up: the bar and the figure beside it say so.
    expect(page.locator("#upload-percent")).to_have_text("100%")
    assert page.locator("#upload-bar").evaluate("bar => bar.value") == 100
    shot(page, f"{name}-2-uploaded")
    page.click("text=See the image")
    expect(page).to_have_url(re.compile(r"/images/[0-9a-f-]{36}/$"))
    return Image.objects.get(name=name)


def status_on_page(page, image, wanted: str, processes) -> None:
    """Reload the image's page until its badge says `wanted` (the worker validates in the background)."""
    def shows_it():
        page.reload()
        return page.locator("h1 .badge").inner_text().strip() == wanted

    wait_for(shows_it, timeout=120, log_paths=processes.logs,
             message=lambda: f"image {image.name} is {Image.objects.get(pk=image.pk).status}, not {wanted}")


def test_upload_a_qcow2_see_progress_and_the_image_become_available(page, shot, alice, alice_project, image_worker,
                                                                   image_dirs, tmp_path):
    disk = tmp_path / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    log_in(page, "alice", "alice-password-1")
    image = upload(page, shot, disk, "tiny")
    status_on_page(page, image, "Available", image_worker)
    expect(page.locator("main")).to_contain_text("64.0 MB")  # the virtual size the worker read
    shot(page, "tiny-3-available")

    image.refresh_from_db()
    assert (image.status, image.project, image.virtual_size_bytes) == (ImageStatus.AVAILABLE, alice_project,
                                                                       64 * 1024 * 1024)
    store, uploads = image_dirs
    assert open(image.location, "rb").read() == disk.read_bytes()
    assert files_in(uploads) == [] and files_in(store) == [f"{image.uuid}.qcow2"]
    page.goto("/images/")
    expect(page.locator("main")).to_contain_text("tiny")


def test_a_raw_file_named_qcow2_is_refused_with_the_reason(page, shot, alice, alice_project, image_worker,
                                                          image_dirs, tmp_path):
    fake = tmp_path / "disk.qcow2"
    fake.write_bytes(b"\x00" * 512 + b"just a raw disk, whatever its name says" * 1000)
    log_in(page, "alice", "alice-password-1")
    image = upload(page, shot, fake, "pretender")
    status_on_page(page, image, "Rejected", image_worker)
    expect(page.locator("main .error")).to_contain_text("not a qcow2 image")
    shot(page, "pretender-3-rejected")

    image.refresh_from_db()
    assert image.status == ImageStatus.REJECTED and image.location == ""
    store, uploads = image_dirs
    assert files_in(store) == [] and files_in(uploads) == []  # a refused image leaves no file behind
