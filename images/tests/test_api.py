"""Images and disks through the API, with alice (owner), bob (member) and charlie (stranger).

Uploads go through the real multipart parser and the streaming handler; validation runs the
real inspector and qemu-img (operations are advanced in-process, see conftest.run_operations).
"""

import hashlib
import os

import pytest

from accounts.models import AuditEntry
from images.choices import DiskRole, ImageStatus
from images.models import Disk, Image
from images.tests.conftest import run_operations


def upload(client, path, name, django_capture_on_commit_callbacks, **fields):
    with open(path, "rb") as handle, django_capture_on_commit_callbacks(execute=True):
        return client.post("/api/v1/images/", {"name": name, "file": handle, **fields}, format="multipart")


def files_in(directory):
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def test_upload_validates_and_stores_a_qcow2(api, alice_project, image_files, enqueued, image_dirs,
                                             django_capture_on_commit_callbacks):
    store, uploads = image_dirs
    response = upload(api["alice"], image_files["good.qcow2"], "debian", django_capture_on_commit_callbacks,
                      description="my OS")
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "validating"
    run_operations(enqueued)
    image = Image.objects.get(uuid=response.json()["uuid"])
    assert image.status == ImageStatus.AVAILABLE, image.error
    assert image.project == alice_project
    assert image.virtual_size_bytes == 16 * 1024 * 1024
    stored = image_files["good.qcow2"].read_bytes()
    assert image.checksum_sha256 == hashlib.sha256(stored).hexdigest()
    assert open(image.location, "rb").read() == stored
    assert files_in(uploads) == []
    assert files_in(store) == [f"{image.uuid}.qcow2"]
    assert AuditEntry.objects.filter(action="image.upload", target_uuid=image.uuid).exists()
    # bob (member) sees it, charlie (stranger) gets 404.
    assert api["bob"].get(f"/api/v1/images/{image.uuid}/").json()["status"] == "available"
    assert api["charlie"].get(f"/api/v1/images/{image.uuid}/").status_code == 404
    assert api["charlie"].delete(f"/api/v1/images/{image.uuid}/").status_code == 404


def test_a_raw_upload_is_converted_when_declared(api, alice_project, image_files, enqueued, image_dirs,
                                                 django_capture_on_commit_callbacks):
    response = upload(api["alice"], image_files["disk.raw"], "rawdisk", django_capture_on_commit_callbacks,
                      format="raw")
    assert response.status_code == 202, response.content
    run_operations(enqueued)
    image = Image.objects.get(uuid=response.json()["uuid"])
    assert image.status == ImageStatus.AVAILABLE, image.error
    assert open(image.location, "rb").read(4) == b"QFI\xfb"
    assert image.virtual_size_bytes == 16 * 1024 * 1024
    assert files_in(image_dirs[1]) == []


@pytest.mark.parametrize("name, message", [
    ("shadow-backing.qcow2", "names a backing file"),
    ("raw-named.qcow2", "not a qcow2 image"),
    ("huge.qcow2", "virtual size (1125899906842624 bytes) is above the limit"),
    ("truncated.qcow2", "truncated or corrupt"),
    ("headless.qcow2", "truncated"),
    ("external-data.qcow2", "external data file"),
    ("encrypted.qcow2", "encrypted"),
    ("overlay.qcow2", "names a backing file"),
])
def test_refused_uploads_say_why_and_leave_nothing(api, alice_project, image_files, enqueued, image_dirs, name,
                                                   message, django_capture_on_commit_callbacks):
    response = upload(api["alice"], image_files[name], "bad", django_capture_on_commit_callbacks)
    assert response.status_code == 202, response.content
    run_operations(enqueued)
    body = api["alice"].get(f"/api/v1/images/{response.json()['uuid']}/").json()
    assert body["status"] == "rejected"
    assert message in body["error"]
    assert files_in(image_dirs[0]) == [] and files_in(image_dirs[1]) == []
    assert Image.objects.get(uuid=body["uuid"]).location == ""


def test_the_backing_file_is_never_read(api, alice_project, image_files, enqueued, image_dirs, tmp_path,
                                        django_capture_on_commit_callbacks):
    """qemu-img never runs on a file whose header names another file: its atime stays put."""
    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"top secret" * 1000)
    os.utime(secret, (1_000_000, 1_000_000))
    hostile = tmp_path / "hostile.qcow2"
    os.system(f"qemu-img create -q -f qcow2 -b {secret} -F raw {hostile}")
    os.utime(secret, (1_000_000, 1_000_000))
    upload(api["alice"], hostile, "hostile", django_capture_on_commit_callbacks)
    run_operations(enqueued)
    assert Image.objects.get(name="hostile").status == ImageStatus.REJECTED
    assert secret.stat().st_atime == 1_000_000


def test_upload_input_errors_are_400_and_leave_nothing(api, alice_project, image_files, enqueued, image_dirs,
                                                       settings, django_capture_on_commit_callbacks):
    response = upload(api["alice"], image_files["good.qcow2"], "", django_capture_on_commit_callbacks)
    assert response.status_code == 400 and "name" in response.json()
    response = upload(api["alice"], image_files["good.qcow2"], "x", django_capture_on_commit_callbacks,
                      format="vmdk")
    assert response.status_code == 400 and "format" in response.json()
    response = upload(api["alice"], image_files["good.qcow2"], "x", django_capture_on_commit_callbacks,
                      public="true")
    assert response.status_code == 400 and "public" in response.json()
    response = api["alice"].post("/api/v1/images/", {"name": "nofile"}, format="multipart")
    assert response.status_code == 400 and "file" in response.json()
    settings.UNCLOUD_IMAGE_MAX_UPLOAD_GIB = 0
    response = upload(api["alice"], image_files["good.qcow2"], "big", django_capture_on_commit_callbacks)
    assert response.status_code == 400 and "larger than the limit" in str(response.json())
    assert files_in(image_dirs[1]) == [] and not Image.objects.exists()


def test_duplicate_names_conflict_and_leave_no_upload(api, alice_project, image_files, enqueued, image_dirs,
                                                      django_capture_on_commit_callbacks):
    assert upload(api["alice"], image_files["good.qcow2"], "os", django_capture_on_commit_callbacks).status_code == 202
    response = upload(api["bob"], image_files["good.qcow2"], "os", django_capture_on_commit_callbacks,
                      project=str(alice_project.uuid))
    assert response.status_code == 409
    assert len(files_in(image_dirs[1])) == 1  # only the first upload, waiting for validation


def test_staff_publish_public_images(client_for, staff, alice, image_files, enqueued, image_dirs,
                                     django_capture_on_commit_callbacks):
    response = upload(client_for(staff), image_files["good.qcow2"], "debian-12", django_capture_on_commit_callbacks,
                      public="true")
    assert response.status_code == 202, response.content
    run_operations(enqueued)
    body = client_for(alice).get(f"/api/v1/images/{response.json()['uuid']}/").json()
    assert body["is_public"] and body["status"] == "available"
    # Customers cannot change or delete public images (they look like someone else's: 404).
    assert client_for(alice).delete(f"/api/v1/images/{body['uuid']}/").status_code == 404
    assert client_for(staff).patch(f"/api/v1/images/{body['uuid']}/", {"description": "x"}).status_code == 200


def test_deleting_an_image_in_use_is_refused(api, alice_project, image_files, enqueued, image_dirs,
                                             django_capture_on_commit_callbacks):
    response = upload(api["alice"], image_files["good.qcow2"], "os", django_capture_on_commit_callbacks)
    run_operations(enqueued)
    image = Image.objects.get(uuid=response.json()["uuid"])
    disk = Disk.objects.create(project=alice_project, name="web-root", role=DiskRole.ROOT, image=image, size_mib=64)
    response = api["alice"].delete(f"/api/v1/images/{image.uuid}/")
    assert response.status_code == 409 and "web-root" in response.json()["detail"]
    disk.delete()
    with django_capture_on_commit_callbacks(execute=True):
        assert api["bob"].delete(f"/api/v1/images/{image.uuid}/").status_code == 204
    assert files_in(image_dirs[0]) == []


def test_data_volumes(api, alice_project, enqueued):
    response = api["alice"].post("/api/v1/disks/", {"name": "data1", "size": "2G"}, format="json")
    assert response.status_code == 201, response.content
    disk = response.json()
    assert disk["size_mib"] == 2048 and disk["role"] == "data" and disk["storage"] == "local"
    assert api["alice"].post("/api/v1/disks/", {"name": "data1", "size": "1G"}, format="json").status_code == 409
    assert api["alice"].post("/api/v1/disks/", {"name": "x", "size": "lots"}, format="json").status_code == 400
    assert api["alice"].post("/api/v1/disks/", {"name": "x", "size": "10T"}, format="json").status_code == 403
    assert api["charlie"].get(f"/api/v1/disks/{disk['uuid']}/").status_code == 404
    assert api["charlie"].post(f"/api/v1/disks/{disk['uuid']}/extend/", {"size": "3G"}).status_code == 404
    response = api["bob"].post(f"/api/v1/disks/{disk['uuid']}/extend/", {"size": "3G"}, format="json")
    assert response.status_code == 200 and response.json()["size_mib"] == 3072
    response = api["alice"].post(f"/api/v1/disks/{disk['uuid']}/extend/", {"size": "1G"}, format="json")
    assert response.status_code == 409 and "only grow" in response.json()["detail"]
    assert api["alice"].post(f"/api/v1/disks/{disk['uuid']}/detach/").status_code == 409
    assert api["alice"].post(f"/api/v1/disks/{disk['uuid']}/snapshot/", {"name": "s"}).status_code == 409
    assert api["alice"].delete(f"/api/v1/disks/{disk['uuid']}/").status_code == 204
    assert not Disk.objects.filter(uuid=disk["uuid"]).exists()
