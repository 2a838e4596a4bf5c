"""Networks, NICs, firewalls and public IPv4 through the API: alice owns, bob is a member, charlie a stranger.

No host is involved here (the VMs never get one), so attach/detach take the stopped-VM path and
NAT64 syncs stay queued; the lab tests drive the host side."""

import pytest

from agents.models import Host, Operation
from billing.models import Order
from networks.models import NIC, Firewall, IPv4Address, IPv4Pool, Network, PrefixPool
from vms.actions import do_create_vm, do_stop_vm


@pytest.fixture
def pool(db):
    return PrefixPool.objects.create(prefix="2001:db8:500::/62")  # room for exactly four /64s


@pytest.fixture
def alice_vm(alice, alice_project, pool):
    vm, _ = do_create_vm(alice, alice_project, name="web", cores=1, memory_mib=512, disk_mib=1024, networks=[])
    do_stop_vm(alice, vm)  # it never got a host: the create is cancelled and the VM is stopped
    vm.refresh_from_db()
    return vm


@pytest.fixture
def ipv4_pool(db):
    host = Host.objects.create(name="nat64", ssh_address="fd00::1", underlay_address="fd00:1::1")
    return IPv4Pool.objects.create(prefix="192.0.2.0/30", nat64_host=host, translator_address="198.51.100.1",
                                   nat64_prefix="64:ff9b:1::/96")


def test_network_crud_and_isolation(api, pool, alice_project):
    created = api["bob"].post("/api/v1/networks/", {"name": "backend", "project": str(alice_project.uuid)},
                              format="json")
    assert created.status_code == 201, created.json()
    network = created.json()
    assert network["prefix"].endswith("::/64") and network["vni"] >= 1000
    url = f"/api/v1/networks/{network['uuid']}/"
    assert api["alice"].get(url).status_code == 200
    assert api["charlie"].get(url).status_code == 404
    assert api["charlie"].patch(url, {"name": "mine"}, format="json").status_code == 404
    assert api["charlie"].delete(url).status_code == 404
    assert all(item["uuid"] != network["uuid"] for item in api["charlie"].get("/api/v1/networks/").json()["results"])
    assert api["alice"].post("/api/v1/networks/", {"name": "backend"}, format="json").status_code == 409
    assert api["alice"].patch(url, {"name": "db"}, format="json").json()["name"] == "db"
    assert api["alice"].delete(url).status_code == 204


def test_pool_exhaustion_is_409(api, pool):
    for number in range(4):
        assert api["alice"].post("/api/v1/networks/", {"name": f"n{number}"}, format="json").status_code == 201
    response = api["alice"].post("/api/v1/networks/", {"name": "one-too-many"}, format="json")
    assert response.status_code == 409
    assert "no free /64" in response.json()["detail"]
    assert Network.objects.count() == 4


def test_attach_and_detach_on_a_stopped_vm(api, alice_vm, pool, alice_project):
    network = api["alice"].post("/api/v1/networks/", {"name": "backend"}, format="json").json()
    body = {"vm": str(alice_vm.uuid), "network": network["uuid"]}
    assert api["charlie"].post("/api/v1/nics/", body, format="json").status_code == 400  # VM unknown to him
    attached = api["bob"].post("/api/v1/nics/", body, format="json")
    assert attached.status_code == 201, attached.json()  # no host yet: nothing to plug, no operation
    nic = attached.json()["nic"]
    assert nic["ipv6_address"].startswith(network["prefix"].split("::")[0]) and nic["index"] == 0
    assert attached.json()["operation"] is None
    # Deleting a network that a NIC uses is refused, and says why.
    refused = api["alice"].delete(f"/api/v1/networks/{network['uuid']}/")
    assert refused.status_code == 409 and "detach" in refused.json()["detail"]
    assert api["charlie"].delete(f"/api/v1/nics/{nic['uuid']}/").status_code == 404
    assert api["alice"].delete(f"/api/v1/nics/{nic['uuid']}/").status_code == 204
    assert not NIC.objects.filter(uuid=nic["uuid"]).exists()
    assert api["alice"].delete(f"/api/v1/networks/{network['uuid']}/").status_code == 204


def test_attach_to_another_projects_network_is_refused(api, alice_vm, pool, charlie):
    from networks.actions import do_create_network

    charlies = do_create_network(charlie, charlie.owned_projects.first(), "private")
    response = api["alice"].post("/api/v1/nics/", {"vm": str(alice_vm.uuid), "network": str(charlies.uuid)},
                                 format="json")
    assert response.status_code == 400  # charlie's network does not exist for alice
    assert not NIC.objects.filter(vm=alice_vm).exists()


def test_firewall_replace_validate_and_isolation(api, alice_vm):
    url = f"/api/v1/vms/{alice_vm.uuid}/firewall/"
    assert api["alice"].get(url).json() == {"rules": [], "version": 0, "applied": True, "error": ""}
    rules = {"rules": [{"protocol": "tcp", "port_min": 22, "source": "::/0", "description": "ssh"},
                       {"protocol": "udp", "port_min": 60000, "port_max": 61000, "source": "2001:db8::/32"}]}
    answer = api["bob"].put(url, rules, format="json")
    assert answer.status_code == 202, answer.json()
    assert answer.json()["version"] == 1
    assert [rule["port_max"] for rule in answer.json()["rules"]] == [22, 61000]
    # The VM has no host: its rules go with its next vm-up, so they count as applied (by the task).
    assert Firewall.objects.get(vm=alice_vm).version == 1
    for bad in ({"protocol": "tcp", "source": "::/0"},  # a port is needed
                {"protocol": "icmpv6", "port_min": 1},  # icmp has no ports
                {"protocol": "tcp", "port_min": 80, "port_max": 79},
                {"protocol": "tcp", "port_min": 22, "source": "10.0.0.0/8"},
                {"protocol": "tcp", "port_min": 22, "source": "2001:db8::1/32"},  # host bits set
                {"protocol": "sctp", "port_min": 22},
                {"protocol": "tcp", "port_min": "22; drop table"}):
        response = api["alice"].put(url, {"rules": [bad]}, format="json")
        assert response.status_code == 400, (bad, response.json())
    assert api["alice"].get(url).json()["version"] == 1  # refused changes changed nothing
    assert api["charlie"].get(url).status_code == 404
    assert api["charlie"].put(url, {"rules": []}, format="json").status_code == 404
    assert api["alice"].put(url, {"rules": []}, format="json").json()["rules"] == []


def test_ipv4_allocate_map_release_with_quota_and_order(api, alice_vm, alice_project, ipv4_pool, pool):
    from vms.networking import do_attach_nic

    public = Network.objects.create(name="public", vni=4000, prefix="2001:db8:600::/64", is_public=True)
    nic, _ = do_attach_nic(None, alice_vm, public)
    alice_project.quota_ipv4 = 1
    alice_project.save()
    created = api["bob"].post("/api/v1/ipv4-addresses/", {"nic": str(nic.uuid), "project": str(alice_project.uuid)},
                              format="json")
    assert created.status_code == 201, created.json()
    address = created.json()
    assert address["address"] in ("192.0.2.1", "192.0.2.2") and address["status"] == "pending"
    assert address["vm"] == str(alice_vm.uuid) and address["nat64_prefix"] == "64:ff9b:1::/96"
    assert Order.objects.get(resource_uuid=address["uuid"], ends_at__isnull=True).product.code == "ipv4"
    assert Operation.objects.filter(kind="ipv4.sync", target_uuid=ipv4_pool.uuid).count() == 1
    over = api["alice"].post("/api/v1/ipv4-addresses/", {}, format="json")
    assert over.status_code == 403 and "IPv4" in str(over.json())
    url = f"/api/v1/ipv4-addresses/{address['uuid']}/"
    assert api["charlie"].get(url).status_code == 404
    assert api["charlie"].patch(url, {"nic": None}, format="json").status_code == 404
    assert api["charlie"].delete(url).status_code == 404
    # A sync that has not read the maps yet covers this change too: no second one queued.
    unmapped = api["alice"].patch(url, {"nic": None}, format="json")
    assert unmapped.status_code == 200 and unmapped.json()["nic"] is None
    assert Operation.objects.filter(kind="ipv4.sync", target_uuid=ipv4_pool.uuid).count() == 1
    assert api["alice"].patch(url, {"nic": "not-a-uuid"}, format="json").status_code == 400
    assert api["alice"].delete(url).status_code == 204
    assert Order.objects.get(resource_uuid=address["uuid"]).ends_at is not None
    assert not IPv4Address.objects.exists()


def test_ipv4_pool_exhaustion_is_409(api, alice_project, ipv4_pool):
    alice_project.quota_ipv4 = 10
    alice_project.save()
    # A /30 has two usable addresses (network and broadcast are skipped).
    assert [api["alice"].post("/api/v1/ipv4-addresses/", {}, format="json").status_code for _ in range(3)] == \
        [201, 201, 409]


def test_nic_of_a_stranger_cannot_be_mapped(api, alice_project, ipv4_pool, charlie, pool):
    from networks.actions import do_create_network

    charlies_project = charlie.owned_projects.first()
    charlies_vm, _ = do_create_vm(charlie, charlies_project, name="c", cores=1, memory_mib=512, disk_mib=1024,
                                  networks=[do_create_network(charlie, charlies_project, "c")])
    alice_project.quota_ipv4 = 1
    alice_project.save()
    nic = charlies_vm.nics.get()
    response = api["alice"].post("/api/v1/ipv4-addresses/", {"nic": str(nic.uuid)}, format="json")
    assert response.status_code == 400
    assert not IPv4Address.objects.exists()
