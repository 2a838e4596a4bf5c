import pytest

from accounts.models import AuditEntry
from images.models import Disk, Image
from networks.models import NIC, Network, PrefixPool
from vms.models import VM, SSHKey

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1L0f0dB4JqZ1nlMHVzrb6R2q1zwI0iNQ7DP9BYbJt alice@laptop"


@pytest.fixture
def public_network(db):
    from networks.actions import do_create_public_network

    PrefixPool.objects.create(prefix="2001:db8:100::/56")
    return do_create_public_network(None, "public")


@pytest.fixture
def public_image(db):
    return Image.objects.create(name="debian-12", status="available", virtual_size_bytes=2 * 1024**3)


def create_vm(client, **overrides):
    # image None: an empty disk (these tests are about the API, not about booting an OS).
    body = {"name": "web1", "cores": 2, "memory": "2GiB", "disk": "20G", "image": None, **overrides}
    return client.post("/api/v1/vms/", body, format="json")


def test_create_vm_with_human_units(api, public_network, public_image, alice_project):
    key = api["alice"].post("/api/v1/ssh-keys/", {"name": "laptop", "public_key": ED25519}, format="json").json()
    response = create_vm(api["alice"], image=str(public_image.uuid), ssh_keys=[key["uuid"]])
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["memory_mib"] == 2048 and body["disk_mib"] == 20480 and body["cores"] == 2
    assert body["project"] == str(alice_project.uuid)
    assert body["status"] == "pending" and body["desired_state"] == "running"
    # The address is known before the VM ever boots: EUI-64 of its MAC in the public /64.
    nic = NIC.objects.get(vm__uuid=body["uuid"])
    assert body["ipv6_addresses"] == [nic.ipv6_address]
    assert nic.ipv6_address.startswith(public_network.prefix.split("::")[0])
    assert Disk.objects.get(vm__uuid=body["uuid"]).size_mib == 20480
    assert AuditEntry.objects.filter(action="vm.create", target_uuid=body["uuid"]).exists()
    assert "id" not in body  # public UUIDs only


@pytest.mark.parametrize("field, value", [("memory", "2 gigs"), ("memory", "64M"), ("disk", "-1G"), ("memory", True),
                                          ("disk", "1.5M"), ("cores", 0), ("cores", "many"), ("memory", None)])
def test_bad_values_are_400_with_reason(api, field, value):
    response = create_vm(api["alice"], **{field: value})
    assert response.status_code == 400
    assert field in response.json()
    assert VM.objects.count() == 0 and Disk.objects.count() == 0


def test_bad_unit_message_says_what_is_accepted(api):
    message = create_vm(api["alice"], memory="2 gigs").json()["memory"][0]
    assert '"2GiB"' in message and "powers of 1024" in message


@pytest.mark.parametrize("name", ["a;rm -rf /", "$(touch /tmp/x)", "`id`", "UPPER", "-lead", "x" * 64, "a b",
                                  "web\n1", "", "é"])
def test_vm_names_must_be_hostnames(api, name):
    response = create_vm(api["alice"], name=name)
    assert response.status_code == 400 and "name" in response.json()


def test_duplicate_name_is_409(api):
    assert create_vm(api["alice"]).status_code == 201
    assert create_vm(api["alice"]).status_code == 409
    assert VM.objects.count() == 1


def test_idempotency_key_returns_same_vm(api):
    first = api["alice"].post("/api/v1/vms/", {"name": "a1", "cores": 1, "memory": "512M", "disk": "10G", "image": None},
                              format="json", HTTP_IDEMPOTENCY_KEY="create-a1-7")
    again = api["alice"].post("/api/v1/vms/", {"name": "a1", "cores": 1, "memory": "512M", "disk": "10G", "image": None},
                              format="json", HTTP_IDEMPOTENCY_KEY="create-a1-7")
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["uuid"] == again.json()["uuid"]
    assert VM.objects.count() == 1


def test_vm_isolation_and_member_access(api):
    vm = create_vm(api["alice"]).json()
    url = f"/api/v1/vms/{vm['uuid']}/"
    assert api["bob"].get(url).status_code == 200
    assert api["charlie"].get(url).status_code == 404
    assert api["charlie"].patch(url, {"name": "stolen"}, format="json").status_code == 404
    assert api["charlie"].delete(url).status_code == 404
    assert api["charlie"].get("/api/v1/vms/").json()["count"] == 0
    assert api["bob"].patch(url, {"name": "renamed"}, format="json").json()["name"] == "renamed"
    deleted = api["bob"].delete(url)
    assert deleted.status_code == 202 and deleted.json()["vm"]["status"] == "deleted"
    assert VM.objects.get().status == "deleted" and Disk.objects.count() == 0
    assert api["alice"].get("/api/v1/vms/").json()["count"] == 0  # the list leaves deleted VMs out


def test_stranger_resources_cannot_be_referenced(api, charlie):
    stranger_key = api["charlie"].post("/api/v1/ssh-keys/", {"name": "k", "public_key": ED25519}, format="json").json()
    stranger_net = None
    response = create_vm(api["alice"], ssh_keys=[stranger_key["uuid"]])
    assert response.status_code == 400 and "ssh_keys" in response.json()
    from accounts.models import Project

    response = create_vm(api["alice"], project=str(Project.objects.get(owner=charlie).uuid))
    assert response.status_code == 400 and "project" in response.json()
    assert VM.objects.count() == 0 and stranger_net is None


@pytest.mark.parametrize("bad", ["ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7", "not a key", "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
                                 ED25519 + "\nssh-ed25519 AAAA", "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7 x",
                                 "ssh-ed25519 !!!!", "x" * 20000])
def test_bad_ssh_keys_are_400(api, bad):
    response = api["alice"].post("/api/v1/ssh-keys/", {"name": "bad", "public_key": bad}, format="json")
    assert response.status_code == 400 and "public_key" in response.json()
    assert SSHKey.objects.count() == 0


def test_ssh_key_crud_and_isolation(api):
    response = api["alice"].post("/api/v1/ssh-keys/", {"name": "laptop", "public_key": ED25519}, format="json")
    assert response.status_code == 201
    key = response.json()
    assert key["fingerprint"].startswith("SHA256:") and key["key_type"] == "ssh-ed25519"
    again = api["alice"].post("/api/v1/ssh-keys/", {"name": "other", "public_key": ED25519}, format="json")
    assert again.status_code == 409
    url = f"/api/v1/ssh-keys/{key['uuid']}/"
    assert api["bob"].get(url).status_code == 200
    for method in ("get", "patch", "delete"):
        assert getattr(api["charlie"], method)(url).status_code == 404
    assert api["alice"].patch(url, {"name": "old laptop"}, format="json").json()["name"] == "old laptop"
    assert api["alice"].delete(url).status_code == 204


def test_networks(api, public_network):
    response = api["alice"].post("/api/v1/networks/", {"name": "backend"}, format="json")
    assert response.status_code == 201
    network = response.json()
    assert network["prefix"].endswith("::/64") and network["vni"] >= 1000
    assert network["multicast_group"].startswith("ff05::")
    url = f"/api/v1/networks/{network['uuid']}/"
    assert api["bob"].get(url).status_code == 200
    for method in ("get", "patch", "delete"):
        assert getattr(api["charlie"], method)(url).status_code == 404
    # Everyone sees the public network, nobody but staff changes it.
    public_url = f"/api/v1/networks/{public_network.uuid}/"
    assert api["charlie"].get(public_url).status_code == 200
    assert api["charlie"].delete(public_url).status_code == 404
    # In use -> 409; free -> gone.
    vm = create_vm(api["alice"], networks=[network["uuid"]]).json()
    assert api["alice"].delete(url).status_code == 409
    assert api["alice"].delete(f"/api/v1/vms/{vm['uuid']}/").status_code == 202
    assert api["alice"].delete(url).status_code == 204


def test_network_pool_exhaustion_is_409(api, db):
    PrefixPool.objects.create(prefix="2001:db8:7:fe::/63")  # room for exactly two /64s
    assert api["alice"].post("/api/v1/networks/", {"name": "n1"}, format="json").status_code == 201
    assert api["alice"].post("/api/v1/networks/", {"name": "n2"}, format="json").status_code == 201
    response = api["alice"].post("/api/v1/networks/", {"name": "n3"}, format="json")
    assert response.status_code == 409 and "no free /64" in response.json()["detail"]
    assert Network.objects.count() == 2


def test_no_pool_is_409(api, db):
    response = api["alice"].post("/api/v1/networks/", {"name": "n1"}, format="json")
    assert response.status_code == 409


def test_nics_and_disks_isolation(api, public_network):
    vm = create_vm(api["alice"]).json()
    nic = NIC.objects.get(vm__uuid=vm["uuid"])
    disk = Disk.objects.get(vm__uuid=vm["uuid"])
    for kind, obj in (("nics", nic), ("disks", disk)):
        url = f"/api/v1/{kind}/{obj.uuid}/"
        assert api["alice"].get(url).status_code == 200
        assert api["bob"].get(url).status_code == 200
        assert api["charlie"].get(url).status_code == 404
        assert api["charlie"].get(f"/api/v1/{kind}/").json()["count"] == 0


def test_images_visibility(api, alice_project, public_image):
    own = Image.objects.create(project=alice_project, name="custom", status="available")
    assert {i["name"] for i in api["charlie"].get("/api/v1/images/").json()["results"]} == {"debian-12"}
    url = f"/api/v1/images/{own.uuid}/"
    assert api["bob"].get(url).status_code == 200
    for method in ("get", "patch", "delete"):
        assert getattr(api["charlie"], method)(url).status_code == 404
    assert api["alice"].delete(f"/api/v1/images/{public_image.uuid}/").status_code == 404
    create_vm(api["alice"], image=str(own.uuid))
    assert api["alice"].delete(url).status_code == 409
    assert Image.objects.filter(pk=own.pk).exists()


def test_unavailable_image_is_409(api, alice_project):
    image = Image.objects.create(project=alice_project, name="half", status="validating")
    assert create_vm(api["alice"], image=str(image.uuid)).status_code == 409
    assert VM.objects.count() == 0


def test_hosts_are_staff_only(api, staff, client_for):
    assert api["alice"].get("/api/v1/hosts/").status_code == 403
    admin = client_for(staff)
    response = admin.post("/api/v1/hosts/", {"name": "hv1", "ssh_address": "2001:db8::1",
                                             "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1L0f0dB4JqZ1nlMHVzrb6R2q1zwI0iNQ7DP9BYbJt"},
                          format="json")
    assert response.status_code == 201, response.json()
    assert admin.post("/api/v1/hosts/", {"name": "hv;2", "ssh_address": "x"}, format="json").status_code == 400
    assert admin.post("/api/v1/hosts/", {"name": "hv2"}, format="json").status_code == 400
    assert admin.post("/api/v1/hosts/", {"name": "hv3", "ssh_address": "h", "host_key": "junk"},
                      format="json").status_code == 400


def test_operations_isolation(api, alice_project):
    from agents.models import Operation

    op = Operation.objects.create(kind="vm.create", project=alice_project)
    url = f"/api/v1/operations/{op.uuid}/"
    assert api["alice"].get(url).json()["state"] == "pending"
    assert api["bob"].get(url).status_code == 200
    assert api["charlie"].get(url).status_code == 404
    assert api["alice"].delete(url).status_code == 405


def test_an_operation_s_error_detail_is_for_staff_only(api, alice_project, staff, client_for):
    from agents.models import Operation

    op = Operation.objects.create(kind="vm.create", project=alice_project, state="failed",
                                  error="Its host ran out of disk space.",
                                  error_detail="HostError: hv1: qemu-img ran out of disk space\n"
                                               "command: qemu-img create -f qcow2 /var/lib/uncloud/disks/x.qcow2.tmp")
    url = f"/api/v1/operations/{op.uuid}/"
    for who in ("alice", "bob"):
        body = api[who].get(url).json()
        assert body["error"] == "Its host ran out of disk space." and "error_detail" not in body
        assert "qemu-img" not in str(api[who].get("/api/v1/operations/").json())
    assert client_for(staff).get(f"{url}?all=1").json()["error_detail"].startswith("HostError: hv1")


def test_a_project_s_usage_counts_what_it_holds_and_no_one_else_s(api, alice_project, charlie, public_network):
    """The usage the quota checks read (written as SQL, vms/actions.py) against the rows themselves."""
    from django.db.models import Sum

    from accounts.models import Project
    from accounts.scoping import default_project
    from agents.models import Host
    from images.models import Disk
    from networks.models import IPv4Address, IPv4Pool
    from vms.actions import project_usage_and_name_taken
    from vms.models import VM

    for name, memory in (("web", "512M"), ("db", "1G"), ("gone", "256M")):
        assert api["alice"].post("/api/v1/vms/", {"name": name, "cores": 2, "memory": memory, "disk": "3G",
                                                  "image": None}, format="json").status_code == 201
    api["charlie"].post("/api/v1/vms/", {"name": "web", "cores": 1, "memory": "128M", "disk": "1G", "image": None},
                    format="json")
    VM.objects.filter(project=alice_project, name="gone").update(status="deleted", desired_state="deleted")
    translator = Host.objects.create(name="nat64", transport="local")
    pool = IPv4Pool.objects.create(prefix="192.0.2.0/28", nat64_host=translator, translator_address="198.51.100.1")
    IPv4Address.objects.create(pool=pool, address="192.0.2.1", project=alice_project)
    IPv4Address.objects.create(pool=pool, address="192.0.2.2", project=default_project(charlie))

    usage, web_taken = project_usage_and_name_taken(alice_project, "web")
    live = VM.objects.filter(project=alice_project).exclude(status="deleted")
    assert (usage.vms, usage.cores, usage.memory_mib) == (2, 4, 1536) == (
        live.count(), live.aggregate(total=Sum("cores"))["total"], live.aggregate(total=Sum("memory_mib"))["total"])
    assert usage.disk_mib == Disk.objects.filter(project=alice_project).aggregate(total=Sum("size_mib"))["total"]
    assert usage.ipv4 == 1
    assert web_taken and not project_usage_and_name_taken(alice_project, "gone")[1]  # a deleted VM's name is free
    assert not project_usage_and_name_taken(alice_project)[1]
    empty, _ = project_usage_and_name_taken(Project.objects.create(name="empty", owner=charlie))
    assert (empty.vms, empty.cores, empty.memory_mib, empty.disk_mib, empty.ipv4) == (0, 0, 0, 0, 0)
