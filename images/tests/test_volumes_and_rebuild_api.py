"""Attaching and detaching volumes (cold, and hot as an operation), rebuilding a VM from an image,
and images from snapshots, through the API and the portal, with alice (owner), bob (member) and
charlie (stranger). Host work is not run here (see test_workflows_lab.py): these tests check what
the control plane decides and records."""

import pytest

from accounts.models import Project
from agents.choices import HostTransport
from agents.models import Host, Operation
from images.choices import DiskRole, DiskStatus, ImageStatus, SnapshotStatus, StorageBackend
from images.models import Disk, Image, Snapshot
from vms.actions import do_create_vm
from vms.models import VM


@pytest.fixture
def host(db):
    return Host.objects.create(name="hv1", transport=HostTransport.LOCAL, state_dir="/var/lib/uncloud-test")


@pytest.fixture
def image(db):
    return Image.objects.create(name="debian", status=ImageStatus.AVAILABLE, virtual_size_bytes=512 * 1024**2,
                                checksum_sha256="a" * 64)


def make_vm(alice, project, image, name="web1", **state):
    vm, _ = do_create_vm(alice, project, name=name, cores=1, memory_mib=512, disk_mib=1024, image=image, networks=[])
    Operation.objects.filter(target_uuid=vm.uuid).update(state="succeeded")
    VM.objects.filter(pk=vm.pk).update(**state)
    vm.refresh_from_db()
    return vm


def volume(client, name="data1"):
    response = client.post("/api/v1/disks/", {"name": name, "size": "1G"}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["uuid"]


def test_volumes_of_a_stopped_vm_change_at_once(api, alice, alice_project, image, host):
    vm = make_vm(alice, alice_project, image, host=host, status="stopped", desired_state="stopped")
    disk = volume(api["alice"])
    attached = api["bob"].post(f"/api/v1/disks/{disk}/attach/", {"vm": str(vm.uuid)}, format="json")
    assert attached.status_code == 200 and attached.json()["vm"] == str(vm.uuid)
    assert "operation" not in attached.json()
    assert api["charlie"].post(f"/api/v1/disks/{disk}/detach/").status_code == 404
    detached = api["alice"].post(f"/api/v1/disks/{disk}/detach/")
    assert detached.status_code == 200 and detached.json()["vm"] is None
    assert not Operation.objects.filter(kind__in=["vm.attach_disk", "vm.detach_disk"]).exists()


def test_volumes_of_a_running_vm_are_plugged_by_an_operation(api, alice, alice_project, image, host):
    vm = make_vm(alice, alice_project, image, host=host, status="running")
    disk = volume(api["alice"])
    charlie = api["charlie"].post(f"/api/v1/disks/{disk}/attach/", {"vm": str(vm.uuid)}, format="json")
    assert charlie.status_code == 404

    attached = api["alice"].post(f"/api/v1/disks/{disk}/attach/", {"vm": str(vm.uuid)}, format="json")
    assert attached.status_code == 202, attached.content
    operation = attached.json()["operation"]
    assert operation["kind"] == "vm.attach_disk" and operation["target_uuid"] == str(vm.uuid)
    assert Operation.objects.get(uuid=operation["uuid"]).payload == {"disk": disk}
    assert Disk.objects.get(uuid=disk).vm == vm  # desired state: attached; the guest follows
    # While it is being plugged in, the VM takes no other work: a second volume, a stop, a detach.
    second = volume(api["alice"], "data2")
    busy = api["alice"].post(f"/api/v1/disks/{second}/attach/", {"vm": str(vm.uuid)}, format="json")
    assert busy.status_code == 409 and "vm.attach_disk" in busy.json()["detail"]
    assert api["alice"].post(f"/api/v1/vms/{vm.uuid}/stop/").status_code == 409
    assert api["alice"].post(f"/api/v1/disks/{disk}/detach/").status_code == 409

    Operation.objects.filter(uuid=operation["uuid"]).update(state="succeeded")
    detached = api["bob"].post(f"/api/v1/disks/{disk}/detach/")
    assert detached.status_code == 202 and detached.json()["operation"]["kind"] == "vm.detach_disk"
    # It stays attached until the guest has let go.
    assert detached.json()["vm"] == str(vm.uuid) and Disk.objects.get(uuid=disk).vm == vm


def test_a_failed_hot_attach_gives_the_volume_back(api, alice, alice_project, image, host):
    from vms.disk_workflows import _hot_attach_failed

    vm = make_vm(alice, alice_project, image, host=host, status="running")
    disk = volume(api["alice"])
    operation = api["alice"].post(f"/api/v1/disks/{disk}/attach/", {"vm": str(vm.uuid)}, format="json").json()
    _hot_attach_failed(Operation.objects.get(uuid=operation["operation"]["uuid"]))
    disk_row = Disk.objects.get(uuid=disk)
    assert disk_row.vm is None and disk_row.status == DiskStatus.AVAILABLE


def test_rebuild(api, alice, charlie, alice_project, image, host):
    vm = make_vm(alice, alice_project, image, host=host, status="running")
    other = Image.objects.create(name="alpine", project=alice_project, status=ImageStatus.AVAILABLE,
                                 virtual_size_bytes=256 * 1024**2, checksum_sha256="b" * 64)
    url = f"/api/v1/vms/{vm.uuid}/rebuild/"
    assert api["charlie"].post(url, {"image": str(other.uuid)}, format="json").status_code == 404

    foreign = Image.objects.create(name="theirs", project=Project.objects.get(owner=charlie),
                                   status=ImageStatus.AVAILABLE, checksum_sha256="c" * 64)
    for bad in ({}, {"image": "not-a-uuid"}, {"image": "00000000-0000-4000-8000-000000000000"},
                {"image": str(foreign.uuid)}):
        response = api["alice"].post(url, bad, format="json")
        assert response.status_code == 400 and "image" in response.json(), (bad, response.content)
    pending = Image.objects.create(name="half", project=alice_project, status=ImageStatus.VALIDATING)
    assert api["alice"].post(url, {"image": str(pending.uuid)}, format="json").status_code == 409
    big = Image.objects.create(name="big", project=alice_project, status=ImageStatus.AVAILABLE,
                               virtual_size_bytes=8 * 1024**3, checksum_sha256="d" * 64)
    response = api["alice"].post(url, {"image": str(big.uuid)}, format="json")
    assert response.status_code == 409 and "smaller than the image" in response.json()["detail"]

    response = api["bob"].post(url, {"image": str(other.uuid)}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["operation"]["kind"] == "vm.rebuild" and body["vm"]["status"] == "building"
    assert body["vm"]["image"] == str(other.uuid)
    assert Disk.objects.get(vm=vm, role=DiskRole.ROOT).image == other
    assert Operation.objects.get(uuid=body["operation"]["uuid"]).payload == {
        "hard": True, "start": True, "image": str(other.uuid)}
    # One operation at a time.
    assert api["alice"].post(url, {"image": str(image.uuid)}, format="json").status_code == 409
    assert api["alice"].post(f"/api/v1/vms/{vm.uuid}/reboot/").status_code == 409


def test_rebuild_of_a_vm_without_a_host_only_changes_the_image(api, alice, alice_project, image):
    vm = make_vm(alice, alice_project, image, status="stopped", desired_state="stopped")
    other = Image.objects.create(name="alpine", status=ImageStatus.AVAILABLE, virtual_size_bytes=1,
                                 checksum_sha256="b" * 64)
    response = api["alice"].post(f"/api/v1/vms/{vm.uuid}/rebuild/", {"image": str(other.uuid)}, format="json")
    assert response.status_code == 202 and response.json()["operation"] is None
    assert Disk.objects.get(vm=vm, role=DiskRole.ROOT).image == other


def test_rebuild_from_the_portal(client, alice, bob, charlie, alice_project, image, host):
    vm = make_vm(alice, alice_project, image, host=host, status="stopped", desired_state="stopped")
    client.force_login(charlie)
    assert client.post(f"/vms/{vm.uuid}/rebuild/", {"image": str(image.uuid)}).status_code == 404
    client.force_login(bob)
    page = client.get(f"/vms/{vm.uuid}/").content.decode()
    assert f'action="/vms/{vm.uuid}/rebuild/"' in page and f'value="{image.uuid}"' in page
    refused = client.post(f"/vms/{vm.uuid}/rebuild/", {"image": "nonsense"}, follow=True)
    assert "Choose an available image to rebuild from." in refused.content.decode()
    assert not Operation.objects.filter(kind="vm.rebuild").exists()
    response = client.post(f"/vms/{vm.uuid}/rebuild/", {"image": str(image.uuid)})
    assert response.status_code == 302
    operation = Operation.objects.get(kind="vm.rebuild", target_uuid=vm.uuid)
    assert operation.payload["start"] is False  # a stopped VM stays stopped


def test_images_from_snapshots(api, alice_project, enqueued):
    disk = Disk.objects.create(project=alice_project, name="d", size_mib=64, status=DiskStatus.AVAILABLE,
                               storage=StorageBackend.RBD, location="rbd/disk-x")
    rbd = Snapshot.objects.create(project=alice_project, name="s-rbd", disk=disk, storage=StorageBackend.RBD,
                                  status=SnapshotStatus.AVAILABLE, location="rbd/disk-x@snap")
    response = api["alice"].post(f"/api/v1/snapshots/{rbd.uuid}/image/", {"name": "from-rbd"}, format="json")
    assert response.status_code == 400 and "not supported" in str(response.json())
    assert not Image.objects.filter(name="from-rbd").exists()
    assert api["charlie"].post(f"/api/v1/snapshots/{rbd.uuid}/image/", {"name": "x"}).status_code == 404
    pending = Snapshot.objects.create(project=alice_project, name="s-local", disk=disk, status=SnapshotStatus.PENDING)
    assert api["alice"].post(f"/api/v1/snapshots/{pending.uuid}/image/", {"name": "x"}).status_code == 409
