"""The Operation engine driven step by step in-process.

`enqueue` is replaced by a recorder here so each test decides when the next step runs; the real
broker + worker path is covered by test_worker.py.
"""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from agents import operations
from agents.choices import OperationState
from agents.models import Operation
from agents.operations import PermanentStepError, Step, TransientStepError, register_workflow

calls = []


@pytest.fixture
def enqueued(monkeypatch):
    queued = []
    monkeypatch.setattr(operations, "enqueue", lambda op_id, countdown=0: queued.append((op_id, countdown)))
    calls.clear()
    return queued


def _record(name, result=None):
    def run(operation):
        calls.append((name, operation.attempts))
        return result

    return run


register_workflow("test.two-steps", [Step("first", _record("first", {"a": 1})), Step("second", _record("second", {"b": 2}))])


def _flaky(operation):
    calls.append(("flaky", operation.attempts))
    if operation.attempts < 3:
        raise TransientStepError("host busy")


failed_targets = []
register_workflow("test.flaky", [Step("flaky", _flaky)])
register_workflow(
    "test.broken", [Step("broken", lambda op: (_ for _ in ()).throw(PermanentStepError("disk full", details="ENOSPC")))],
    on_failure=lambda op: failed_targets.append(op.uuid),
)
register_workflow("test.crash", [Step("crash", lambda op: 1 / 0)])


def start(kind, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return operations.start_operation(kind)


def test_steps_run_in_order_and_finish(db, enqueued, django_capture_on_commit_callbacks):
    op = start("test.two-steps", django_capture_on_commit_callbacks)
    assert enqueued == [(op.id, 0)] and op.steps_total == 2
    with django_capture_on_commit_callbacks(execute=True):
        assert operations.advance(op.id) == "advanced"
    op.refresh_from_db()
    assert (op.state, op.step, op.steps_done, op.progress) == ("running", "second", 1, 50)
    assert op.lease_until is None and op.result == {"a": 1}
    assert operations.advance(op.id) == "succeeded"
    op.refresh_from_db()
    assert op.state == OperationState.SUCCEEDED and op.progress == 100 and op.finished is not None
    assert op.result == {"a": 1, "b": 2}
    assert calls == [("first", 1), ("second", 1)]
    assert operations.advance(op.id) == "not-claimed"  # finished operations never run again


def test_a_held_lease_blocks_a_second_worker(db, enqueued, django_capture_on_commit_callbacks):
    op = start("test.two-steps", django_capture_on_commit_callbacks)
    assert operations.claim(op.id) is not None
    assert operations.claim(op.id) is None
    # The holder died: once its lease expires, someone else may take over and rerun the step.
    Operation.objects.filter(id=op.id).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert operations.advance(op.id) == "advanced"
    op.refresh_from_db()
    assert op.step == "second"


def test_transient_errors_retry_with_backoff_then_succeed(db, enqueued, django_capture_on_commit_callbacks):
    op = start("test.flaky", django_capture_on_commit_callbacks)
    assert operations.advance(op.id) == "retrying"
    op.refresh_from_db()
    assert op.state == "running" and op.error == "host busy" and op.lease_until > timezone.now()
    assert enqueued[-1][1] > 1  # the retry is delayed
    assert operations.advance(op.id) == "not-claimed"  # not before the backoff ends
    for _ in range(2):
        Operation.objects.filter(id=op.id).update(lease_until=timezone.now() - timedelta(seconds=1))
        operations.advance(op.id)
    op.refresh_from_db()
    assert op.state == OperationState.SUCCEEDED and op.error == ""


def test_transient_errors_give_up_after_max_attempts(db, enqueued, settings, django_capture_on_commit_callbacks):
    settings.UNCLOUD_OPERATION_MAX_ATTEMPTS = 2
    op = start("test.flaky", django_capture_on_commit_callbacks)
    operations.advance(op.id)
    Operation.objects.filter(id=op.id).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert operations.advance(op.id) == "failed"
    op.refresh_from_db()
    assert op.state == "failed" and op.error.startswith("Gave up after 2 attempts: host busy")


def test_permanent_error_fails_at_once_with_details(db, enqueued, django_capture_on_commit_callbacks):
    op = start("test.broken", django_capture_on_commit_callbacks)
    assert operations.advance(op.id) == "failed"
    op.refresh_from_db()
    # The customer reads the cause; the details (paths, commands, stderr) are for staff only.
    assert op.state == "failed" and op.error == "disk full" and op.finished is not None
    assert op.error_detail == "step broken, attempt 1\nENOSPC"
    assert failed_targets == [op.uuid]


def test_a_crashing_step_fails_visibly(db, enqueued, django_capture_on_commit_callbacks):
    op = start("test.crash", django_capture_on_commit_callbacks)
    assert operations.advance(op.id) == "failed"
    op.refresh_from_db()
    assert op.error == "Internal error in step crash; staff have been told."
    assert "ZeroDivisionError: division by zero" in op.error_detail


def test_unknown_kind_fails_instead_of_hanging(db, enqueued):
    op = Operation.objects.create(kind="test.nonexistent", step="x", steps_total=1)
    assert operations.advance(op.id) == "failed"
    op.refresh_from_db()
    assert op.state == "failed" and "unknown" in op.error


def test_resume_stalled_requeues_expired_and_lost(db, enqueued, django_capture_on_commit_callbacks):
    expired = start("test.two-steps", django_capture_on_commit_callbacks)
    Operation.objects.filter(id=expired.id).update(
        state="running", lease_owner="dead-worker", lease_until=timezone.now() - timedelta(seconds=5)
    )
    lost = start("test.two-steps", django_capture_on_commit_callbacks)
    Operation.objects.filter(id=lost.id).update(updated=timezone.now() - timedelta(minutes=5))
    fresh = start("test.two-steps", django_capture_on_commit_callbacks)
    done = start("test.two-steps", django_capture_on_commit_callbacks)
    Operation.objects.filter(id=done.id).update(state="succeeded", updated=timezone.now() - timedelta(minutes=5))
    enqueued.clear()
    assert operations.resume_stalled() == 2
    assert {op_id for op_id, _ in enqueued} == {expired.id, lost.id}
    assert fresh.id not in {op_id for op_id, _ in enqueued}


def test_cancel(db, enqueued, django_capture_on_commit_callbacks):
    op = start("test.two-steps", django_capture_on_commit_callbacks)
    assert operations.cancel(op, "VM deleted")
    assert operations.advance(op.id) == "not-claimed"
    op.refresh_from_db()
    assert op.state == "cancelled"


def _observe(name):
    """A step that records what the row said while it ran: (name, step, steps_done, attempts, held)."""
    def run(operation):
        row = Operation.objects.get(id=operation.id)
        calls.append((name, row.step, row.steps_done, row.attempts, row.lease_owner != ""))
        if name == "dies" and not any(call[0] == "dies" for call in calls[:-1]):
            raise SystemExit("worker killed")  # not an Exception: nothing records it, like SIGKILL
        return {name: True}

    return run


register_workflow("test.three-steps", [Step("a", _observe("a")), Step("b", _observe("b")), Step("c", _observe("c"))])
register_workflow("test.dies-in-second", [Step("a", _observe("a")), Step("dies", _observe("dies"))])
register_workflow("test.merged", [Step("a", _observe("a")), Step("c", _observe("c"))], renamed_steps={"b": "c"})


def test_advance_steps_runs_the_steps_back_to_back_holding_the_lease(db, enqueued, django_capture_on_commit_callbacks):
    op = start("test.three-steps", django_capture_on_commit_callbacks)
    enqueued.clear()
    assert operations.advance_steps(op.id, budget_s=60) == "succeeded"
    # Each step was recorded before the next ran, and the worker kept its claim in between.
    assert calls == [("a", "a", 0, 1, True), ("b", "b", 1, 1, True), ("c", "c", 2, 1, True)]
    op.refresh_from_db()
    assert (op.state, op.steps_done, op.lease_owner, op.lease_until) == ("succeeded", 3, "", None)
    assert op.result == {"a": True, "b": True, "c": True}
    assert enqueued == []


def test_advance_steps_hands_the_rest_to_the_queue_after_its_budget(db, enqueued, django_capture_on_commit_callbacks):
    op = start("test.three-steps", django_capture_on_commit_callbacks)
    enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert operations.advance_steps(op.id, budget_s=0) == "advanced"
    op.refresh_from_db()
    assert (op.step, op.steps_done, op.lease_owner, op.lease_until) == ("b", 1, "", None)
    assert enqueued == [(op.id, 0)]


def test_a_worker_dying_between_held_steps_is_resumed_when_the_lease_expires(db, enqueued,
                                                                           django_capture_on_commit_callbacks):
    op = start("test.dies-in-second", django_capture_on_commit_callbacks)
    with pytest.raises(SystemExit):
        operations.advance_steps(op.id, budget_s=60)
    op.refresh_from_db()
    assert (op.state, op.step, op.steps_done, op.result) == ("running", "dies", 1, {"a": True})
    first_started = op.started
    assert first_started is not None
    assert operations.advance(op.id) == "not-claimed"  # its lease still runs
    Operation.objects.filter(id=op.id).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert operations.advance_steps(op.id, budget_s=60) == "succeeded"
    assert [call[0] for call in calls] == ["a", "dies", "dies"]
    assert calls[-1][3] == 2  # the second try of that step
    op.refresh_from_db()
    assert op.state == "succeeded" and op.result == {"a": True, "dies": True}
    assert op.started == first_started  # set by the first claim only


def test_a_row_naming_a_merged_step_resumes_at_the_step_that_does_its_work(db, enqueued):
    op = Operation.objects.create(kind="test.merged", step="b", steps_done=1, steps_total=3)
    assert operations.advance_steps(op.id, budget_s=60) == "succeeded"
    assert [call[0] for call in calls] == ["c"]
    op.refresh_from_db()
    assert op.state == "succeeded" and op.result == {"c": True}


def _slow_step(operation):
    time.sleep(1.5)
    return {"slept": True}


register_workflow("test.slow", [Step("slow", _slow_step)])


def test_a_long_step_keeps_its_lease_renewed_while_it_runs(transactional_db, enqueued, settings):
    """A lease shorter than the step: the step's heartbeat thread keeps it, so no second worker can
    claim the operation while the first is still working on it."""
    settings.UNCLOUD_OPERATION_LEASE_SECONDS = 1  # renewed every 0.2 s
    op = operations.start_operation("test.slow")
    claimed_meanwhile = []

    def try_to_claim():
        time.sleep(1.2)  # past the first lease's end
        claimed_meanwhile.append(operations.claim(op.id))
        connections.close_all()

    rival = threading.Thread(target=try_to_claim)
    rival.start()
    assert operations.advance(op.id) == "succeeded"
    rival.join()
    assert claimed_meanwhile == [None]
    assert Operation.objects.get(id=op.id).attempts == 1


def test_a_dead_worker_s_lease_is_not_renewed(db, enqueued, settings):
    settings.UNCLOUD_OPERATION_LEASE_SECONDS = 1
    op = operations.start_operation("test.two-steps")
    assert operations.claim(op.id) is not None  # and the worker dies: nobody renews
    time.sleep(1.1)
    assert operations.claim(op.id) is not None


def test_an_operation_the_broker_did_not_take_is_left_to_the_resumer(db, monkeypatch,
                                                                     django_capture_on_commit_callbacks):
    def broker_down(operation_id, countdown=0):
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    monkeypatch.setattr(operations, "enqueue", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        op = operations.start_operation("test.two-steps")  # the on-commit send does not raise
    op.refresh_from_db()
    assert op.state == "pending" and op.lease_owner == "" and op.lease_until is not None
    sent = []
    monkeypatch.setattr(operations, "enqueue", lambda operation_id, countdown=0: sent.append(operation_id))
    assert operations.resume_stalled() == 1 and sent == [op.id]  # at the resumer's next round


register_workflow("test.parked", [Step("park", _record("park"))])


def test_a_wake_gate_wakes_only_what_can_proceed(db, enqueued):
    parked = [Operation.objects.create(kind="test.parked", step="park", steps_total=1, state="waiting")
              for _ in range(5)]
    other = Operation.objects.create(kind="test.two-steps", step="first", steps_total=2, state="waiting")
    seen = []

    def one_slot(operations_waiting):
        seen.append([operation.id for operation in operations_waiting])
        return [operations_waiting[0].id]

    operations.register_wake_gate(["test.parked"], one_slot)
    assert operations.wake_waiting(["test.parked", "test.two-steps"]) == 2
    assert seen == [[operation.id for operation in parked]]  # oldest first
    assert sorted(op_id for op_id, _ in enqueued) == sorted([parked[0].id, other.id])
    assert Operation.objects.filter(kind="test.parked", state="waiting").count() == 4


def _commit_mode(operation):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        mode = cursor.fetchone()[0]
    calls.append(("mode", mode))
    if operation.payload.get("crash"):
        raise RuntimeError("a bug in the step")
    return {"mode": mode}


register_workflow("test.commit-mode", [Step("look", _commit_mode), Step("look-again", _commit_mode)])


def _session_commit_mode():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


def test_the_engine_commits_unflushed_and_puts_the_connection_back(transactional_db, enqueued):
    # Run on PostgreSQL (the suite's database): its steps' commits do not wait for the disk, and
    # whatever runs on the connection afterwards (an API request, billing) waits again.
    from django.db import connection

    assert connection.vendor == "postgresql", "bin/test runs agents/ on PostgreSQL, whose setting this is"
    assert _session_commit_mode() == "on"
    one_by_one = operations.start_operation("test.commit-mode")
    assert operations.advance(one_by_one.id) == "advanced"
    assert _session_commit_mode() == "on"
    chained = operations.start_operation("test.commit-mode")
    assert operations.advance_steps(chained.id, budget_s=30) == "succeeded"
    assert _session_commit_mode() == "on"
    crashing = operations.start_operation("test.commit-mode", payload={"crash": True})
    assert operations.advance_steps(crashing.id, budget_s=30) == "failed"
    assert _session_commit_mode() == "on"
    assert [mode for name, mode in calls if name == "mode"] == ["off"] * 4
