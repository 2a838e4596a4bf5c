"""A host's wall clock jumps an hour forward, then an hour back, while its VMs run and operations on
it are in flight, with a real worker, beat and host watcher (tests/lab/clock.py moves the clock of
the host's programs and qemu only: this machine's clock is shared). Leases, fences and timeouts
must ride on monotonic clocks: nothing may notice the jump but the wall-clock readings themselves.
Ends like every fault test (tests/lab/invariants.py), and: the host's guard killed no guest, the
watcher never called the host suspect, no current step was refused as a stale holder, heartbeats
and metrics went on."""

import time

import pytest
from django.utils import timezone

from accounts.models import AuditEntry
from agents.choices import HostLiveness, HostStatus
from agents.models import Host, Operation
from observability.models import VMSample
from tests.lab.clock import JumpingClock
from tests.lab.controlplane import qemu_pids, wait_for_operation, wait_for_status
from tests.lab.waiting import wait_for
from vms.actions import do_start_vm, do_stop_vm
from vms.models import VM
from vms.tests.test_faults_lab import mid_step

pytestmark = [pytest.mark.lab, pytest.mark.worker, pytest.mark.slow]

HOUR = 3600
# Long enough for the guard (a tick every 0.2 s) to act on the jumped clock: a guard timing its lease
# (15 s) by the wall clock fences within a second of the jump forward.
HOLD_S = 4


@pytest.fixture
def jumping_clock(lab):
    """Set up before `cloud` and so put back after it: the host's sshd restarts only once nothing of
    the test's control plane talks to it any more."""
    with JumpingClock(lab.hosts[0]) as clock:
        yield clock


def test_a_host_clock_jumping_an_hour_forward_and_back(lab, jumping_clock, cloud, alice):
    jumping, peer = lab.hosts
    clock = jumping_clock
    made = cloud(UNCLOUD_METRICS_SAMPLE_INTERVAL=2)
    # The peer keeps answering the guard's questions (a guard fences only when a peer still hears
    # the control plane) but takes no VM: every VM lands on the jumping host.
    Host.objects.filter(name=peer.name).update(status=HostStatus.DRAINING)
    host = Host.objects.get(name=jumping.name)
    steady, cycled = made.create("steady"), made.create("cycled")
    for vm in (steady, cycled):
        wait_for_status(vm, "running", made.processes)
    wait_for(lambda: any(clock.runs_on_host_clock(pid) for pid in clock.daemon_pids("guard")), timeout=30,
             log_paths=made.processes.logs, message="no guard runs on the host's clock")
    (steady_qemu,) = qemu_pids(steady)
    assert clock.runs_on_host_clock(steady_qemu)  # qemu lives on its host's clock, as on a real host

    def hold(since):
        """At least HOLD_S on the jumped clock, and until a heartbeat and a metrics sample of the steady
        VM came in after the jump; the host stays alive in the watcher's eyes all along."""
        at_least, at_most = time.monotonic() + HOLD_S, time.monotonic() + 60

        def heard():
            return Host.objects.get(pk=host.pk).last_heartbeat > since and \
                VMSample.objects.filter(vm_uuid=steady.uuid, taken__gt=since).exists()

        while time.monotonic() < at_least or not heard():
            assert time.monotonic() < at_most, "no heartbeat or metrics sample came in on the jumped clock"
            assert Host.objects.get(pk=host.pk).liveness == HostLiveness.ALIVE
            time.sleep(0.2)

    # An hour forward, with a create and a stop in flight on the host.
    late = made.create("created-across-the-jump")
    create = Operation.objects.get(target_uuid=late.uuid, kind="vm.create")
    wait_for(lambda: mid_step(create), timeout=60, log_paths=made.processes.logs)
    stop = do_stop_vm(alice, VM.objects.get(pk=cycled.pk))
    jumped = timezone.now()
    clock.jump(+HOUR)
    assert clock.host_time() - time.time() == pytest.approx(HOUR, abs=60)  # the jump really happened
    hold(since=jumped)
    assert wait_for_operation(create, made.processes).state == "succeeded", create.error
    assert wait_for_operation(stop, made.processes).state == "succeeded", stop.error

    # An hour back (to the true time: everything the host wrote in the last seconds is now an
    # hour in its future), with a start and a stop in flight.
    start = do_start_vm(alice, VM.objects.get(pk=cycled.pk))
    stop_late = do_stop_vm(alice, VM.objects.get(pk=late.pk))
    jumped_back = timezone.now()
    clock.jump(0)
    assert clock.host_time() - time.time() == pytest.approx(0, abs=60)
    hold(since=jumped_back)
    for operation in (start, stop_late):
        assert wait_for_operation(operation, made.processes).state == "succeeded", operation.error

    made.settle()
    host.refresh_from_db()
    # The guard killed nothing and nothing counted the host as failing.
    assert qemu_pids(steady) == [steady_qemu]
    assert VM.objects.get(pk=steady.pk).restart_count == 0
    assert host.fence_log == [] and host.fenced_at is None and host.liveness == HostLiveness.ALIVE
    # (A loaded machine may be slow to start the watcher's first heartbeats: from the jump on.)
    assert not AuditEntry.objects.filter(target_uuid=host.uuid, created__gte=jumped).exists(), \
        (jumped, list(AuditEntry.objects.filter(target_uuid=host.uuid).values_list("created", "action", "data")))
    # No step was refused as a stale claim (ha.refuse_stale_holder: "... its worker lost the operation").
    refused = "lost the operation"
    assert not Operation.objects.filter(error_detail__contains=refused).exists()
    assert not any(refused in log.read_text(errors="replace") for log in made.processes.logs)
    # Metrics went on (hold() saw samples after each jump) from the same qemu, whose counters only rise.
    cpu = list(VMSample.objects.filter(vm_uuid=steady.uuid).order_by("taken").values_list("cpu_seconds", flat=True))
    assert cpu == sorted(cpu), cpu
