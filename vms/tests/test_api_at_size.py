"""Listing many VMs costs the same number of queries per page whatever the page size or offset:
no query per VM (its NICs, disks, keys, host and image come in one query each per page).
bench/api_at_size.py times the same listing over 10,000 VMs."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Project
from vms.actions import do_create_vm
from vms.models import VM
from vms.tests.test_api import ED25519

SECOND_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFvIJIP515nZeDg9osmkzHEeZWJSteNFpuftZpVEU+IL alice@desk"


@pytest.fixture
def many_vms(alice, alice_project, api):
    """Eight VMs with what a listing shows: a key, a NIC on the public network, a root disk, a host."""
    from agents.models import Host
    from networks.actions import do_create_public_network
    from networks.models import PrefixPool

    PrefixPool.objects.create(prefix="2001:db8:100::/56")
    do_create_public_network(None, "public")
    key = api["alice"].post("/api/v1/ssh-keys/", {"name": "laptop", "public_key": ED25519}, format="json").json()
    from vms.models import SSHKey

    ssh_key = SSHKey.objects.get(uuid=key["uuid"])
    hosts = [Host.objects.create(name=f"hv{index}", transport="local", state_dir="/var/lib/uncloud", cores=8, memory_mib=8192)
             for index in range(2)]
    for index in range(8):
        vm, _ = do_create_vm(alice, alice_project, name=f"vm{index:02}", cores=1, memory_mib=512, disk_mib=1024,
                             ssh_keys=[ssh_key])
        VM.objects.filter(pk=vm.pk).update(host=hosts[index % 2], status="running")
    return VM.objects.filter(project=alice_project)


def queries_for(client, path) -> tuple[int, dict]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path)
    assert response.status_code == 200, response.content
    return len(queries), response.json()


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_vm_list_costs_the_same_queries_for_any_page_size_and_offset(api, many_vms, who):
    # A token's first request also records when it was last used (then at most once a while): not a page's cost.
    api[who].get("/api/v1/vms/?limit=1")
    counts = {}
    for limit, offset in ((1, 0), (3, 0), (8, 0), (3, 3), (2, 6)):
        counts[(limit, offset)], body = queries_for(api[who], f"/api/v1/vms/?limit={limit}&offset={offset}")
        assert body["count"] == 8 and len(body["results"]) == min(limit, 8 - offset)
        page = body["results"]
        assert all(vm["nics"] and vm["disk_mib"] == 1024 and vm["host"] and vm["ssh_keys"] for vm in page)
    assert len(set(counts.values())) == 1, counts


def test_the_same_count_through_every_page(api, many_vms):
    """Walking `next` links from the first page to the last: each page the same number of queries."""
    path, counts, seen = "/api/v1/vms/?limit=3", [], []
    while path:
        count, body = queries_for(api["alice"], path)
        counts.append(count)
        seen += [vm["name"] for vm in body["results"]]
        path = body["next"]
    assert seen == [f"vm{index:02}" for index in range(8)]
    assert len(set(counts)) == 1, counts


@pytest.mark.parametrize("collection", ["disks", "operations"])
def test_disks_and_operations_cost_the_same_on_every_page(api, many_vms, collection):
    """They page keys first (accounts/api/pagination.py): every page the same queries, none skipped."""
    api["alice"].get(f"/api/v1/{collection}/?limit=1")
    path, counts, seen = f"/api/v1/{collection}/?limit=3", [], []
    while path:
        count, body = queries_for(api["alice"], path)
        counts.append(count)
        seen += [row["uuid"] for row in body["results"]]
        path = body["next"]
    assert len(seen) == len(set(seen)) == body["count"] >= 8
    assert len(set(counts)) == 1, counts


def test_a_stranger_lists_nothing_at_the_same_cost(api, many_vms):
    for who in ("alice", "charlie"):
        api[who].get("/api/v1/vms/?limit=1")  # each token's first use is written down: not a page's cost
    count, body = queries_for(api["charlie"], "/api/v1/vms/?limit=5")
    assert body["count"] == 0 and body["results"] == []
    alice_count, _ = queries_for(api["alice"], "/api/v1/vms/?limit=5")
    # Nothing to prefetch for an empty page: never more than a full page costs.
    assert count <= alice_count


def test_a_page_is_one_query_whatever_its_size(many_vms):
    from vms.api.listing import vm_page

    for offset, limit in ((0, 1), (0, 8), (5, 3), (7, 100)):
        with CaptureQueriesContext(connection) as queries:
            count, answers = vm_page(many_vms.exclude(status="deleted"), offset, limit)
        assert (count, len(answers), len(queries)) == (8, min(limit, 8 - offset), 1)


@pytest.fixture
def vms_of_every_kind(alice, alice_project, bob, many_vms):
    """Beside the eight plain ones: VMs with what else a VM can hold or show (two NICs and an IPv4
    address, two keys, an image and a data disk, an error, a migration, a suspension), one with
    nothing at all, and bob's."""
    from agents.models import Host
    from images.models import Disk, Image
    from networks.actions import do_create_network
    from networks.models import IPv4Address, IPv4Pool
    from vms.actions import do_add_ssh_key
    from vms.models import SSHKey

    image = Image.objects.create(name="debian-12", status="available", virtual_size_bytes=2 * 1024**3)
    private = do_create_network(alice, alice_project, "backend")
    from networks.models import Network

    public = Network.objects.get(project=None)
    keys = [SSHKey.objects.get(project=alice_project), do_add_ssh_key(alice, alice_project, "a-first", SECOND_KEY)]
    full, _ = do_create_vm(alice, alice_project, name="full", cores=4, memory_mib=4096, disk_mib=20480, image=image,
                           networks=[public, private], ssh_keys=keys)
    host = Host.objects.get(name="hv0")
    pool = IPv4Pool.objects.create(prefix="192.0.2.0/29", nat64_host=host, translator_address="198.51.100.1")
    IPv4Address.objects.create(pool=pool, address="192.0.2.2", project=alice_project, nic=full.nics.first(),
                               status="active")
    data = Disk.objects.create(project=alice_project, name="data", vm=full, role="data", size_mib=99999)
    Disk.objects.filter(pk=data.pk).update(created=full.created.replace(year=2000))  # listed before the root disk
    VM.objects.filter(pk=full.pk).update(host=host, status="migrating", restart_count=3, suspended_reason="unpaid bill")
    broken, _ = do_create_vm(alice, alice_project, name="broken", cores=1, memory_mib=512, disk_mib=1024, image=None)
    VM.objects.filter(pk=broken.pk).update(status="error", status_message='qemu-img: "disk" full \u2013 ünïcode')
    bare = VM.objects.create(project=alice_project, name="bare", cores=1, memory_mib=512)
    VM.objects.filter(pk=bare.pk).update(created=bare.created.replace(microsecond=0))  # isoformat drops .000000
    # bob's own project (he is also a member of alice's): his VM must not be listed in hers.
    do_create_vm(bob, Project.objects.get(owner=bob), name="bobs", cores=1, memory_mib=512, disk_mib=1024)
    return VM.objects.filter(project=alice_project)


def test_the_list_answers_what_the_serializer_answers(api, vms_of_every_kind):
    """The list's rows from one SQL statement (vms/api/listing.py) against VMSerializer over the
    same VMs, loaded as the single-VM views load them, compared as the JSON a client reads."""
    import json

    from rest_framework.renderers import JSONRenderer

    from vms.api.serializers import VMSerializer

    listed = api["alice"].get("/api/v1/vms/?limit=100").json()
    expected = VMSerializer(vms_of_every_kind.select_related("project", "image", "host"), many=True).data
    assert listed["count"] == 11
    assert {vm["name"] for vm in listed["results"]} >= {"full", "broken", "bare"}
    assert listed["results"] == json.loads(JSONRenderer().render(expected))
    full = next(vm for vm in listed["results"] if vm["name"] == "full")
    assert len(full["nics"]) == 2 and len(full["ssh_keys"]) == 2 and full["disk_mib"] == 20480 and full["image"]


def test_tenants_see_their_own_vms_only(api, vms_of_every_kind):
    """bob, a member of alice's project, sees its VMs and those of his own; charlie, a stranger, none."""
    names = {who: {vm["name"] for vm in api[who].get("/api/v1/vms/").json()["results"]} for who in api}
    assert len(names["alice"]) == 11 and "bobs" not in names["alice"]
    assert names["bob"] == names["alice"] | {"bobs"} and names["charlie"] == set()


def test_filters_and_pages_past_the_end(api, vms_of_every_kind):
    alice = api["alice"]
    assert [vm["name"] for vm in alice.get("/api/v1/vms/?status=error").json()["results"]] == ["broken"]
    past = alice.get("/api/v1/vms/?limit=5&offset=50").json()
    assert (past["count"], past["results"], past["next"]) == (11, [], None)
    VM.objects.filter(name="bare").update(status="deleted", desired_state="deleted")
    assert alice.get("/api/v1/vms/").json()["count"] == 10
    assert [vm["name"] for vm in alice.get("/api/v1/vms/?status=deleted").json()["results"]] == ["bare"]
