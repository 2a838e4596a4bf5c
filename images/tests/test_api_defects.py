"""Issue 13's image defects: an image used only by deleted VMs can be deleted; an upload cut by a
TCP reset answers 400 and leaves no `.part` file behind."""

import logging
import os
import socket
import struct
import time
from urllib.parse import urlsplit

import pytest

from accounts import actions as account_actions
from images.models import Image
from images.tests.conftest import run_operations
from images.tests.test_api import files_in, upload
from vms.models import VM


def test_an_image_used_only_by_deleted_vms_can_be_deleted(api, alice_project, image_files, enqueued, image_dirs,
                                                          django_capture_on_commit_callbacks):
    response = upload(api["alice"], image_files["good.qcow2"], "os", django_capture_on_commit_callbacks)
    run_operations(enqueued)
    image = Image.objects.get(uuid=response.json()["uuid"])
    gone = VM.objects.create(project=alice_project, name="old", cores=1, memory_mib=512, image=image,
                             status="deleted", desired_state="deleted")
    live = VM.objects.create(project=alice_project, name="live", cores=1, memory_mib=512, image=image)

    refused = api["alice"].delete(f"/api/v1/images/{image.uuid}/")
    assert refused.status_code == 409
    assert "live" in refused.json()["detail"] and "old" not in refused.json()["detail"]

    live.delete()
    with django_capture_on_commit_callbacks(execute=True):
        assert api["alice"].delete(f"/api/v1/images/{image.uuid}/").status_code == 204
    assert not Image.objects.filter(pk=image.pk).exists()
    gone.refresh_from_db()
    assert gone.image is None and gone.status == "deleted"  # the deleted VM's row stays for bills and audit


@pytest.mark.django_db(transaction=True)
def test_an_upload_cut_by_a_tcp_reset_is_400_and_leaves_no_part_file(live_server, image_dirs, caplog):
    """A real socket to a live server: send part of a multipart body, then reset the connection."""
    alice = account_actions.do_create_user("alice", "alice-password-1")
    _, token = account_actions.do_create_token(alice, "tests")
    uploads = image_dirs[1]
    boundary = "cutcutcut"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\ncut\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.qcow2\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    declared = len(head) + 8 * 1024**2
    url = urlsplit(live_server.url)
    caplog.set_level(logging.WARNING, logger="django.request")
    with socket.create_connection((url.hostname, url.port)) as connection:
        connection.sendall(
            (f"POST /api/v1/images/ HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {token}\r\n"
             f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {declared}\r\n\r\n").encode()
            + head + b"\0" * 1024**2)
        deadline = time.monotonic() + 20
        while not any(name.endswith(".part") for name in files_in(uploads)):
            assert time.monotonic() < deadline, "the server never started writing the upload"
            time.sleep(0.05)
        # SO_LINGER with a zero timeout: close() sends a RST instead of a FIN.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    deadline = time.monotonic() + 20
    while files_in(uploads) or not [r for r in caplog.records if getattr(r, "status_code", None)]:
        assert time.monotonic() < deadline, (files_in(uploads), caplog.records)
        time.sleep(0.05)
    assert files_in(uploads) == []
    statuses = [record.status_code for record in caplog.records if getattr(record, "status_code", None)]
    assert statuses == [400], caplog.text
    assert not os.listdir(image_dirs[0]) if os.path.isdir(image_dirs[0]) else True
