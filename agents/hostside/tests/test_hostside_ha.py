"""High availability on the host: the heartbeat renews a fence lease, the guard kills the host's
guests when the lease runs out and the host is the one cut off (a peer still hears the control
plane, or no peer answers), and keeps them when every host lost the control plane; start
generations refuse an outdated vm-up and kill a copy that a newer start outlived."""
import time

from hostside_testlib import fails, hostside, ok, process_gone, vm_spec

FIRST_UUID = "4a000000-0000-4000-8000-000000000001"
SECOND_UUID = "4a000000-0000-4000-8000-000000000002"
LEASE_S = 4


def underlay(host, index):
    # Lab hosts know their underlay address; the conftest's own namespaces number them fd00:1::<i>.
    return getattr(host, "underlay_address", f"fd00:1::{index}")


def heartbeat(hosts, index, peer_index, **extra):
    host, peer = hosts[index - 1], hosts[peer_index - 1]
    return ok(host, "heartbeat", lease_s=LEASE_S, listen=underlay(host, index),
              peers=[underlay(peer, peer_index)], **extra)


def wait_until(predicate, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_guard_holds_when_every_host_is_silent_and_fences_the_one_cut_off(hosts):
    first, second = hosts
    first_vm = ok(first, "vm-up", **vm_spec(FIRST_UUID, [], name="first"))
    second_vm = ok(second, "vm-up", **vm_spec(SECOND_UUID, [], name="second"))
    beat = heartbeat(hosts, 1, 2)
    assert beat["fenced"] is None and beat["guests"][FIRST_UUID]["running"]
    heartbeat(hosts, 2, 1)
    # The heartbeat starts each host's guard without waiting for it; the next one names it.
    assert wait_until(lambda: heartbeat(hosts, 1, 2)["guard_pid"] and heartbeat(hosts, 2, 1)["guard_pid"])
    # Each guard hears the other over the underlay.
    probed = ok(first, "peer-probe", addresses=[underlay(second, 2)])["peers"][underlay(second, 2)]
    assert probed["reachable"] and probed["guard"] and probed["lease_fresh"] and probed["silent_s"] < LEASE_S

    # The control plane goes silent for both: both leases run out, peers answer but none is fresh.
    time.sleep(LEASE_S + 2)
    assert not process_gone(first_vm["pid"]) and not process_gone(second_vm["pid"])

    # The control plane is back for the second host only: the first is the one cut off.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not process_gone(first_vm["pid"]):
        heartbeat(hosts, 2, 1)
        time.sleep(0.3)
    assert process_gone(first_vm["pid"]), "the cut-off host kept its guest"
    assert not process_gone(second_vm["pid"])
    # Fenced until the control plane renews the lease: a late start is refused.
    fails(first, "vm-up", {"state_dir": str(first.state_dir), **vm_spec(FIRST_UUID, [], name="first")}, "fenced")
    # The next heartbeat of the first host reports the fence once, and starts work again.
    reported = heartbeat(hosts, 1, 2)["fenced"]
    assert reported["killed"] == [FIRST_UUID] and "peer still hears" in reported["why"]
    assert heartbeat(hosts, 1, 2)["fenced"] is None
    assert ok(first, "vm-up", **vm_spec(FIRST_UUID, [], name="first"))["status"] == "running"


def test_a_lone_host_keeps_its_guests(hosts):
    host = hosts[0]
    vm = ok(host, "vm-up", **vm_spec(FIRST_UUID, [], name="lone"))
    ok(host, "heartbeat", lease_s=1)
    time.sleep(3)
    assert not process_gone(vm["pid"])


def test_an_isolated_host_fences_itself(hosts):
    first, second = hosts
    vm = ok(first, "vm-up", **vm_spec(FIRST_UUID, [], name="first"))
    # Its only peer does not answer (an address nobody has on the underlay).
    ok(first, "heartbeat", lease_s=1, listen=underlay(first, 1), peers=["fd00:1::99"])
    assert wait_until(lambda: process_gone(vm["pid"]))


def test_generations_refuse_an_older_start_and_kill_an_outlived_copy(hosts):
    host = hosts[0]
    state = {"state_dir": str(host.state_dir)}
    vm = ok(host, "vm-up", **vm_spec(FIRST_UUID, [], name="gen", generation=3))
    status, answer = hostside(host, "vm-up", {**state, **vm_spec(FIRST_UUID, [], name="gen", generation=2)})
    assert answer["error"]["code"] == "stale_generation", answer
    assert not process_gone(vm["pid"])
    # The VM was started again elsewhere with generation 4: the copy here is killed at once.
    beat = ok(host, "heartbeat", lease_s=30, generations={FIRST_UUID: 4})
    assert beat["killed_stale"] == [FIRST_UUID]
    assert process_gone(vm["pid"])
    assert beat["guests"][FIRST_UUID] == {"running": False, "generation": 3}
    status, answer = hostside(host, "vm-up", {**state, **vm_spec(FIRST_UUID, [], name="gen", generation=3)})
    assert answer["error"]["code"] == "stale_generation"
    again = ok(host, "vm-up", **vm_spec(FIRST_UUID, [], name="gen", generation=4))
    assert ok(host, "heartbeat", lease_s=30, generations={FIRST_UUID: 4})["killed_stale"] == []
    assert not process_gone(again["pid"])


def test_peer_probe_tells_a_gone_peer(hosts):
    first, _ = hosts
    answer = ok(first, "peer-probe", addresses=["fd00:1::99"], timeout_s=0.5)["peers"]["fd00:1::99"]
    assert answer["reachable"] is False


def test_heartbeat_checks_its_spec(lone_host):
    state = {"state_dir": str(lone_host.state_dir)}
    fails(lone_host, "heartbeat", {**state, "lease_s": 0}, "bad_spec")
    fails(lone_host, "heartbeat", {**state, "lease_s": 5, "peers": ["1.2.3.4; rm -rf /"]}, "bad_spec")
    fails(lone_host, "heartbeat", {**state, "lease_s": 5, "generations": {"../x": 1}}, "bad_spec")
    fails(lone_host, "peer-probe", {**state, "addresses": ["fd00::1"], "port": 0}, "bad_spec")
