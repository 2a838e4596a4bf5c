"""A worker that lost its operation cannot change anything on a host afterwards: each host call of
a step carries the step's claim (agents.hostagent.acting_for), and the host refuses one older than
a claim of the same target it already heard of. Two workers as two threads of this process, the
real host program over the local transport (this machine as the host, in a state dir of its own)."""

import shutil
import tempfile
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from agents import operations
from agents.choices import HostTransport
from agents.hosts import agent_for, host_errors_as_step_errors
from agents.models import Host, Operation
from agents.operations import Step, StepError, register_workflow

seen: dict[str, str] = {}
stale_in_step, stale_may_go = threading.Event(), threading.Event()


def _call_host(operation):
    worker = threading.current_thread().name
    if worker == "stale-worker":
        stale_in_step.set()
        assert stale_may_go.wait(60)  # paused (a partition, a stopped VM) past its lease
    try:
        with host_errors_as_step_errors():
            agent_for(Host.objects.get(pk=operation.host_id)).call("batch", {"calls": []})
    except StepError as error:
        seen[worker] = error.details  # the host's own words (the message is for customers)
        raise
    seen[worker] = "called"


register_workflow("test.host-call", [Step("call", _call_host)])


@pytest.fixture
def local_host(transactional_db):
    state_dir = tempfile.mkdtemp(prefix="uc-holder-")  # no underscores: the host program refuses them
    yield Host.objects.create(name="hv-local", transport=HostTransport.LOCAL, state_dir=state_dir)
    shutil.rmtree(state_dir)


def as_worker(name, operation_id) -> threading.Thread:
    def run():
        try:
            operations.advance(operation_id, enqueue_next=False)
        finally:
            connection.close()

    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread


def test_a_call_from_a_worker_that_lost_its_operation_is_refused_by_the_host(local_host, alice_project, monkeypatch):
    monkeypatch.setattr(operations, "_worker_id", lambda: threading.current_thread().name)
    monkeypatch.setattr(operations, "enqueue", lambda *args, **kwargs: None)
    seen.clear()
    stale_in_step.clear()
    stale_may_go.clear()
    operation = operations.start_operation("test.host-call", host=local_host, target=alice_project)  # any target but a host

    stale = as_worker("stale-worker", operation.pk)
    assert stale_in_step.wait(60)
    # Its lease ran out (its worker lost the database too, so it renews nothing any more).
    Operation.objects.filter(pk=operation.pk).update(lease_owner="", lease_until=timezone.now() - timedelta(seconds=1))
    time.sleep(0.01)  # the step that takes over starts later (its claim is newer)
    as_worker("taking-over", operation.pk).join(60)
    assert seen == {"taking-over": "called"}
    assert Operation.objects.get(pk=operation.pk).state == "succeeded"

    stale_may_go.set()
    stale.join(60)
    assert "lost the operation" in seen["stale-worker"]
    done = Operation.objects.get(pk=operation.pk)
    assert (done.state, done.error) == ("succeeded", "")  # its failure changed nothing either


def test_a_hosts_own_operations_may_overlap_and_carry_no_claim(local_host):
    check = operations.start_operation("test.host-call", host=local_host, target=local_host)
    assert operations._claimed_target(check) is None


def test_no_current_work_is_refused_after_the_control_planes_clock_stepped_back(local_host, alice_project,
                                                                                monkeypatch):
    """NTP steps the control plane's clock back an hour (or a worker runs on a machine whose clock is
    behind): the steps after it still reach the host. A claim outranks every earlier claim on its
    target whatever the clock says; only a worker that lost its operation is refused."""
    monkeypatch.setattr(operations, "enqueue", lambda *args, **kwargs: None)
    seen.clear()
    before = operations.start_operation("test.host-call", host=local_host, target=alice_project)
    as_worker("before-the-step", before.pk).join(60)
    real_now, real_time = timezone.now, time.time
    monkeypatch.setattr(timezone, "now", lambda: real_now() - timedelta(hours=1))
    monkeypatch.setattr(time, "time", lambda: real_time() - 3600)
    after = operations.start_operation("test.host-call", host=local_host, target=alice_project)
    as_worker("after-the-step", after.pk).join(60)
    assert seen == {"before-the-step": "called", "after-the-step": "called"}
    assert Operation.objects.get(pk=after.pk).state == "succeeded"
