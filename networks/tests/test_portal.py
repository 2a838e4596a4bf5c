"""The VM networking page (NICs, firewall, public IPv4) with alice (owner), bob (member), charlie (stranger)."""

import pytest

from agents.models import Host
from networks import actions as network_actions
from networks.models import NIC, Firewall, IPv4Address, IPv4Pool, PrefixPool
from vms import actions as vm_actions

XSS = "<script>alert(1)</script>"


@pytest.fixture
def world(alice, bob, charlie, alice_project):
    PrefixPool.objects.create(prefix="2001:db8:100::/56")
    network = network_actions.do_create_network(alice, alice_project, "backend")
    other = network_actions.do_create_network(alice, alice_project, "frontend")
    vm, _ = vm_actions.do_create_vm(alice, alice_project, name="web1", cores=1, memory_mib=512, disk_mib=2048,
                                    networks=[network])
    vm_actions.do_stop_vm(alice, vm)  # never placed: the create is cancelled, the VM is stopped
    host = Host.objects.create(name="nat64", ssh_address="fd00::1", underlay_address="fd00:1::1")
    IPv4Pool.objects.create(prefix="192.0.2.0/29", nat64_host=host, translator_address="198.51.100.1")
    alice_project.quota_ipv4 = 1
    alice_project.save()
    return {"vm": vm, "network": network, "other": other}


def test_the_page_and_its_forms_for_owner_member_and_stranger(client, world, alice, bob, charlie):
    vm = world["vm"]
    page = f"/vms/{vm.uuid}/networking/"
    client.force_login(charlie)
    assert client.get(page).status_code == 404
    for action in ("attach/", "rules/add/", "ipv4/allocate/"):
        assert client.post(page + action, {"network": str(world["other"].uuid), "protocol": "tcp",
                                           "port_min": 22, "source": "::/0"}).status_code == 404
    assert not IPv4Address.objects.exists() and NIC.objects.count() == 1

    client.force_login(bob)
    assert client.get(page).status_code == 200
    client.post(page + "rules/add/", {"protocol": "tcp", "port_min": 22, "source": "::/0", "description": XSS})
    response = client.get(page)
    assert b"&lt;script&gt;" in response.content and XSS.encode() not in response.content
    assert Firewall.objects.get(vm=vm).version == 1 and vm.ingress_rules.count() == 1
    # A refused rule says why and changes nothing.
    refused = client.post(page + "rules/add/", {"protocol": "tcp", "port_min": 22, "source": "10.0.0.0/8"},
                          follow=True)
    assert b"not an IPv6 prefix" in refused.content and vm.ingress_rules.count() == 1
    client.post(page + "attach/", {"network": str(world["other"].uuid)})
    assert vm.nics.count() == 2
    client.post(page + "ipv4/allocate/")
    address = IPv4Address.objects.get()
    assert address.nic.vm == vm
    over = client.post(page + "ipv4/allocate/", follow=True)  # the quota is one address
    assert b"IPv4" in over.content and IPv4Address.objects.count() == 1

    client.force_login(alice)
    rule = vm.ingress_rules.get()
    client.post(f"{page}rules/{rule.uuid}/remove/")
    assert vm.ingress_rules.count() == 0 and Firewall.objects.get(vm=vm).version == 2
    client.post(page + "ipv4/unmap/", {"address": str(address.uuid)})
    address.refresh_from_db()
    assert address.nic is None
    assert client.post(page + "ipv4/release/", {"address": "not-a-uuid"}).status_code == 404
    client.post(page + "ipv4/release/", {"address": str(address.uuid)})
    assert not IPv4Address.objects.exists()
    nic = vm.nics.get(network=world["other"])
    client.post(f"{page}nics/{nic.uuid}/detach/")
    assert vm.nics.count() == 1
