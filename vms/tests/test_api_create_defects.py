"""Issue 13's VM-create defects: idempotency keys reused with another body, `desired_state` in a
create, user-data limited in bytes and passed to the guest byte for byte."""

import subprocess
import tempfile

import pytest

from agents.hosts import agent_for
from agents.models import Host, Operation
from images.hostwork import ensure_vm_metadata
from vms.api.serializers import MAX_USER_DATA_BYTES
from vms.models import VM
from vms.tests.test_api import create_vm


def test_an_idempotency_key_reused_with_another_body_is_422(api):
    body = {"name": "a1", "cores": 1, "memory": "512M", "disk": "10G", "image": None}
    first = api["alice"].post("/api/v1/vms/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    # The same request in other units is the same request.
    same = api["alice"].post("/api/v1/vms/", {**body, "memory": 512}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    other = api["alice"].post("/api/v1/vms/", {**body, "cores": 2}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 201 and same.status_code == 200
    assert same.json()["uuid"] == first.json()["uuid"]
    assert other.status_code == 422, other.json()
    assert "Idempotency-Key" in other.json()["detail"] and "different request" in other.json()["detail"]
    assert VM.objects.get().cores == 1


def test_desired_state_stopped_creates_without_starting(api):
    response = create_vm(api["alice"], desired_state="stopped")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["desired_state"] == "stopped" and body["status"] == "stopped"
    assert not Operation.objects.filter(target_uuid=body["uuid"]).exists()
    # Starting it later runs the usual create path: place -> disks -> boot.
    started = api["alice"].post(f"/api/v1/vms/{body['uuid']}/start/")
    assert started.status_code == 202 and started.json()["operation"]["kind"] == "vm.start"


def test_desired_state_running_is_the_default_and_others_are_refused(api):
    assert create_vm(api["alice"], name="r1", desired_state="running").json()["desired_state"] == "running"
    refused = create_vm(api["alice"], name="d1", desired_state="deleted")
    assert refused.status_code == 400 and "desired_state" in refused.json()


def test_user_data_is_limited_in_bytes(api):
    # 40 000 two-byte characters: 80 000 bytes, within a 65 536-character limit but over the byte limit.
    refused = create_vm(api["alice"], user_data="é" * 40_000)
    assert refused.status_code == 400
    assert f"{MAX_USER_DATA_BYTES} bytes" in refused.json()["user_data"][0]
    assert VM.objects.count() == 0
    at_limit = create_vm(api["alice"], user_data="é" * (MAX_USER_DATA_BYTES // 2))
    assert at_limit.status_code == 201


USER_DATA = "  #!/bin/sh\n\techo 'grüße'  \r\n\n  "


@pytest.fixture
def local_host(db):
    """This machine as a hypervisor (the local transport bin/run uses), with a state dir of its own
    (short: the host program refuses state dirs whose QMP socket paths would not fit)."""
    with tempfile.TemporaryDirectory(prefix="uc-") as state_dir:
        yield Host.objects.create(name="here", transport="local", state_dir=state_dir, cores=4,
                                  memory_mib=8192, disk_gib=100)


def test_user_data_reaches_the_guest_config_drive_byte_for_byte(api, local_host):
    response = create_vm(api["alice"], user_data=USER_DATA)
    assert response.status_code == 201
    vm = VM.objects.get(uuid=response.json()["uuid"])
    assert vm.user_data == USER_DATA
    # The host program writes the NoCloud config drive the guest reads; read user-data back out of it.
    iso = ensure_vm_metadata(agent_for(local_host), vm)
    user_data = subprocess.run(["isoinfo", "-R", "-i", iso, "-x", "/user-data"], capture_output=True,
                               check=True).stdout
    assert user_data == USER_DATA.encode()


def test_the_portal_form_keeps_user_data_byte_for_byte_and_counts_bytes(client, alice, alice_project):
    client.force_login(alice)
    form = {"project": str(alice_project.uuid), "name": "web1", "cores": 1, "memory": "1GiB", "disk": "10G",
            "image": ""}
    refused = client.post("/vms/new/", {**form, "user_data": "é" * 40_000})
    assert refused.status_code == 200 and "the limit is 65536 bytes" in refused.content.decode()
    assert VM.objects.count() == 0
    created = client.post("/vms/new/", {**form, "user_data": USER_DATA})
    assert created.status_code == 302, created.content.decode()[-2000:]
    assert VM.objects.get().user_data == USER_DATA


def test_the_portal_answers_a_reused_idempotency_key_with_a_message(client, alice, alice_project):
    client.force_login(alice)
    form = {"project": str(alice_project.uuid), "name": "web1", "cores": 1, "memory": "1GiB", "disk": "10G",
            "image": "", "idempotency_key": "form-1"}
    assert client.post("/vms/new/", form).status_code == 302
    again = client.post("/vms/new/", {**form, "cores": 2})
    assert again.status_code == 200 and "Idempotency-Key" in again.content.decode()
