"""One placer places every VM waiting for its place step (claims), oldest first, and concurrent
placers never give the same room away twice (PostgreSQL, real threads)."""

from accounts.actions import do_set_quota
from agents.choices import OperationState
from agents.models import Host, Operation
from vms import scheduler
from vms.actions import do_delete_vm
from vms.models import VM
from vms.tests.test_actions import create, make_host, place_from_threads


def free_cores(host) -> int:
    (room,) = scheduler.rooms([host])
    return int(room.free_cores)


def test_one_placer_claims_room_for_the_oldest_waiting_creates(alice, alice_project, monkeypatch,
                                                               django_capture_on_commit_callbacks):
    from agents import operations

    sent = []
    # The broker is not what is tested: the wake-up of a parked create is recorded instead of sent.
    monkeypatch.setattr(operations, "enqueue", lambda operation_id, countdown=0: sent.append(operation_id))
    host = make_host("hv1", cores=3)
    vms = [create(alice, alice_project, f"vm-{index}") for index in range(5)]
    operation = {vm.pk: Operation.objects.get(target_uuid=vm.uuid) for vm in vms}
    Operation.objects.filter(pk=operation[vms[0].pk].pk).update(state=OperationState.WAITING)

    # The newest create's placer comes first: the room goes to the three oldest, not to it.
    with django_capture_on_commit_callbacks(execute=True):
        assert scheduler.place(vms[4]) is None
    claimed = {vm.name: Operation.objects.get(target_uuid=vm.uuid).host_id for vm in vms}
    assert claimed == {"vm-0": host.pk, "vm-1": host.pk, "vm-2": host.pk, "vm-3": None, "vm-4": None}
    assert VM.objects.exclude(host=None).count() == 0  # claims, not hosts: each VM's own step takes its host
    assert free_cores(host) == 0
    # The parked one was woken to take its claim.
    assert Operation.objects.get(pk=operation[vms[0].pk].pk).state == OperationState.PENDING
    assert sent == [operation[vms[0].pk].pk]

    # A claim is taken by the VM's own place step, and counted once.
    assert scheduler.place(vms[1]) == host
    assert VM.objects.get(pk=vms[1].pk).host == host
    assert free_cores(host) == 0
    assert scheduler.place(vms[3]) is None

    # A VM deleted before its step ran is gone at once (it has no host), and its claim with it.
    assert do_delete_vm(alice, vms[2]) is None
    assert free_cores(host) == 1
    assert scheduler.place(vms[3]) == host


def test_a_claim_on_a_host_that_went_away_is_given_up(alice, alice_project):
    make_host("hv1", cores=1)
    make_host("hv2", cores=1)
    first, second = create(alice, alice_project, "first"), create(alice, alice_project, "second")
    assert scheduler.place(first) is not None
    claim = Operation.objects.get(target_uuid=second.uuid)
    assert claim.host_id not in (None, VM.objects.get(pk=first.pk).host_id)
    Host.objects.filter(pk=claim.host_id).update(status="draining")
    assert scheduler.place(second) is None  # the one host left is full
    assert Operation.objects.get(pk=claim.pk).host_id is None


def test_concurrent_placers_never_overcommit_with_claims(transactional_db, alice, alice_project):
    """8 placers at once, each working through its share of 60 creates, at 3 hosts with room for
    12: every room is given away once, as a host or as a claim, never twice."""
    do_set_quota(None, alice_project, quota_vms=60, quota_cores=60, quota_memory_mib=60 * 512,
                 quota_disk_mib=60 * 1024)
    hosts = [make_host(f"hv{index}", cores=4) for index in range(3)]
    vms = [create(alice, alice_project, f"vm-{index}") for index in range(60)]
    _, failures = place_from_threads(vms)
    assert failures == []
    assert [free_cores(host) for host in hosts] == [0, 0, 0]
    placed = {vm.uuid: vm.host_id for vm in VM.objects.exclude(host=None)}
    claims = {op.target_uuid: op.host_id for op in Operation.objects.filter(kind="vm.create").exclude(host=None)}
    # A claim and a host of one VM are the same host (taken, not doubled).
    assert all(placed[uuid] == host_id for uuid, host_id in claims.items() if uuid in placed)
    held = {**claims, **placed}
    assert len(held) == 12
    for host in hosts:
        assert sum(1 for host_id in held.values() if host_id == host.pk) == 4


def test_rooms_count_placed_moving_and_claimed_vms_once_each(alice, alice_project):
    # Every kind of VM that holds room on a host, and the ones that must not: on both databases
    # (rooms() is one hand-written statement; bin/test runs this file on PostgreSQL).
    from images.models import Disk

    do_set_quota(None, alice_project, quota_vms=20, quota_cores=64, quota_memory_mib=65536, quota_disk_mib=65536)
    hv1, hv2 = make_host("hv1", cores=32, memory_mib=32768), make_host("hv2", cores=32, memory_mib=32768)

    def vm(name, cores, memory_mib, disk_mib, host=None):
        made = create(alice, alice_project, name, cores=cores, memory_mib=memory_mib, disk_mib=disk_mib)
        Operation.objects.filter(target_uuid=made.uuid).update(state=OperationState.SUCCEEDED)
        VM.objects.filter(pk=made.pk).update(host=host)
        return made

    placed = vm("placed", 2, 1024, 1000, hv1)
    Disk.objects.create(project=alice_project, name="data", vm=placed, size_mib=500)  # a second disk counts
    gone = vm("gone", 8, 8192, 8000, hv1)
    VM.objects.filter(pk=gone.pk).update(status="deleted")
    moving = vm("moving", 3, 2048, 2000, hv2)  # hv2 -> hv1, not switched yet: counted on both
    Operation.objects.create(kind="vm.migrate", target_kind="vm", target_uuid=moving.uuid, host=hv2,
                             state=OperationState.RUNNING, step="transfer", result={"destination": "hv1"})
    switched = vm("switched", 4, 4096, 4000, hv1)  # its move switched it to hv1 already: counted once
    Operation.objects.create(kind="vm.move", target_kind="vm", target_uuid=switched.uuid, host=hv2,
                             state=OperationState.RUNNING, step="finish", result={"destination": "hv1"})
    done = vm("done", 5, 5120, 5000, hv2)  # a move that ended holds nothing on its destination
    Operation.objects.create(kind="vm.migrate", target_kind="vm", target_uuid=done.uuid, host=hv2,
                             state=OperationState.FAILED, step="transfer", result={"destination": "hv1"})
    claimed = vm("claimed", 6, 6144, 6000)  # room claimed on hv1 for its own place step
    Operation.objects.filter(target_uuid=claimed.uuid).update(state=OperationState.PENDING, host=hv1, step="place")

    def used(host, ignoring=None):
        (room,) = scheduler.rooms([host], ignoring=ignoring)
        return 32 - int(room.free_cores), 32768 - int(room.free_memory_mib), 100 * 1024 - int(room.free_disk_mib)

    assert used(hv1) == (2 + 3 + 4 + 6, 1024 + 2048 + 4096 + 6144, 1500 + 2000 + 4000 + 6000)
    assert used(hv2) == (3 + 5, 2048 + 5120, 2000 + 5000)
    assert used(hv1, ignoring=moving) == (2 + 4 + 6, 1024 + 4096 + 6144, 1500 + 4000 + 6000)
    both = {room.host.name: int(room.free_cores) for room in scheduler.rooms([hv1, hv2])}
    assert both == {"hv1": 32 - 15, "hv2": 32 - 8}
    assert scheduler.rooms([]) == []
