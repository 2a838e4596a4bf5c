"""Listing many VMs costs the same number of queries per page whatever the page size or offset:
no query per VM (its NICs, disks, keys, host and image come in one query each per page).
bench/api_at_size.py times the same listing over 10,000 VMs."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from vms.actions import do_create_vm
from vms.models import VM
from vms.tests.test_api import ED25519


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


def test_a_stranger_lists_nothing_at_the_same_cost(api, many_vms):
    count, body = queries_for(api["charlie"], "/api/v1/vms/?limit=5")
    assert body["count"] == 0 and body["results"] == []
    alice_count, _ = queries_for(api["alice"], "/api/v1/vms/?limit=5")
    # Nothing to prefetch for an empty page: never more than a full page costs.
    assert count <= alice_count
