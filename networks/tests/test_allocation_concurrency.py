"""50 concurrent allocations on PostgreSQL: no duplicate VNI, /64 or MAC, and exhaustion is a clean 409."""

import threading

from django.db import connections

from accounts.errors import Conflict
from networks.actions import do_create_network
from networks.allocation import create_nic_row
from networks.models import NIC, Network, PrefixPool
from vms.models import VM

THREADS = 50


def run_concurrently(work) -> list:
    outcomes = []
    barrier = threading.Barrier(THREADS)

    def attempt(index):
        try:
            barrier.wait()
            outcomes.append(work(index))
        except Conflict as error:
            outcomes.append(f"409 {error}")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=attempt, args=(index,)) for index in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_concurrent_networks_get_distinct_vnis_and_prefixes_until_the_pool_is_empty(transactional_db, alice,
                                                                                    alice_project):
    PrefixPool.objects.create(prefix="2001:db8:700::/59")  # 32 /64s for 50 requests
    outcomes = run_concurrently(lambda index: do_create_network(alice, alice_project, f"net-{index}").pk)
    refused = [outcome for outcome in outcomes if isinstance(outcome, str)]
    assert len(outcomes) == THREADS and len(refused) == THREADS - 32
    assert all("no free /64" in outcome for outcome in refused)
    networks = Network.objects.all()
    assert networks.count() == 32
    assert len(set(networks.values_list("vni", flat=True))) == 32
    assert len(set(networks.values_list("prefix", flat=True))) == 32


def test_concurrent_nics_get_distinct_macs_even_from_a_tiny_mac_space(transactional_db, settings, alice,
                                                                       alice_project):
    # 256 possible MACs for 50 NICs: collisions happen and must be retried, never duplicated.
    settings.UNCLOUD_MAC_PREFIX = "02:00:00:00:00"
    PrefixPool.objects.create(prefix="2001:db8:800::/64")
    network = do_create_network(alice, alice_project, "shared")
    vms = [VM.objects.create(project=alice_project, name=f"vm-{index}", cores=1, memory_mib=256)
           for index in range(THREADS)]
    outcomes = run_concurrently(lambda index: create_nic_row(vms[index], network, 0).mac)
    assert not [outcome for outcome in outcomes if outcome.startswith("409")]
    assert NIC.objects.count() == THREADS
    assert len(set(NIC.objects.values_list("mac", flat=True))) == THREADS
    assert len(set(NIC.objects.values_list("ipv6_address", flat=True))) == THREADS
