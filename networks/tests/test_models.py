import pytest
from django.db import IntegrityError, transaction

from networks.addressing import eui64_address, link_local_address, multicast_group, random_local_mac
from networks.models import NIC, Network


def test_eui64_of_the_prototype():
    assert eui64_address("2a0a:e5c1:111:888::/64", "02:00:f0:a9:c4:4e") == "2a0a:e5c1:111:888:0:f0ff:fea9:c44e"
    assert link_local_address("02:00:f0:a9:c4:4e") == "fe80::f0ff:fea9:c44e"


def test_multicast_group_is_unique_per_vni():
    assert multicast_group(100) == "ff05::64"
    assert multicast_group(2**24 - 1) == "ff05::ff:ffff"
    assert len({multicast_group(vni) for vni in range(1, 5000)}) == 4999
    with pytest.raises(ValueError):
        multicast_group(0)


def test_random_macs_are_local_unicast():
    for _ in range(200):
        first = int(random_local_mac("02:00").split(":")[0], 16)
        assert first & 0x02 and not first & 0x01
    with pytest.raises(ValueError):
        random_local_mac("01:00")


def test_network_constraints(alice_project):
    Network.objects.create(name="a", vni=1000, prefix="2001:db8::/64", project=alice_project)
    for fields in ({"vni": 1000, "prefix": "2001:db8:1::/64"},  # duplicate VNI
                   {"vni": 1001, "prefix": "2001:db8::/64"},  # duplicate prefix
                   {"vni": 2**24, "prefix": "2001:db8:2::/64"},  # VNI out of range
                   {"vni": 1002, "prefix": "2001:db8:3::/64", "is_public": True}):  # public network with an owner
        with pytest.raises(IntegrityError), transaction.atomic():
            Network.objects.create(name=f"n{fields['vni']}", project=alice_project, **fields)


def test_nic_mac_and_address_unique(alice_project):
    from vms.models import VM

    network = Network.objects.create(name="a", vni=1000, prefix="2001:db8::/64", project=alice_project)
    vm = VM.objects.create(project=alice_project, name="v", cores=1, memory_mib=512)
    NIC.objects.create(vm=vm, network=network, index=0, mac="02:00:00:00:00:01", ipv6_address="2001:db8::1")
    with pytest.raises(IntegrityError), transaction.atomic():
        NIC.objects.create(vm=vm, network=network, index=1, mac="02:00:00:00:00:01", ipv6_address="2001:db8::2")
    with pytest.raises(IntegrityError), transaction.atomic():
        NIC.objects.create(vm=vm, network=network, index=0, mac="02:00:00:00:00:02", ipv6_address="2001:db8::3")
