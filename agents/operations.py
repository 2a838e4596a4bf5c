"""The Operation engine: long work as a list of idempotent steps, advanced under a lease.

An app registers a workflow (`register_workflow("vm.create", [...steps])`) and starts it with
`start_operation(...)` inside its own transaction. A Celery task calls `advance(op_id)`, which

1. claims the row with a conditional UPDATE (only one worker can win, and only when nobody
   holds an unexpired lease),
2. runs ONE step,
3. records the next step (or the terminal state) and releases the lease.

The Celery task uses `advance_steps(op_id, budget)`: the same, step after step, except that
between two steps the worker keeps the lease (renewed in the UPDATE that records the step).

While a step runs, a heartbeat thread renews the lease (agents/leases.py), so leases are short.
A worker that dies mid-step loses nothing: its lease expires within seconds, `resume_stalled()`
(beat) enqueues the operation again and the step runs again; steps are idempotent, so the result
is the same. A message that cannot be sent (the broker is down) is left to the resumer too: the
operation is committed, and the caller is not told a lie (see send()). Transient errors retry with
backoff; permanent errors, or too many attempts, end the operation as failed: `error` is what the
customer sees (a cause in plain words), `error_detail` what staff need (host, paths, commands).

The engine's own commits do not wait for PostgreSQL to flush them to disk (see
commits_unflushed()): a database crash can lose the last fraction of a second of them, which
looks exactly like a worker that died a moment earlier, and steps are made for that.
"""

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.sql import column, columns, table
from agents import hostslots
from agents.choices import TERMINAL_OPERATION_STATES, OperationState
from agents.hostagent import acting_for
from agents.leases import lease_renewed
from agents.models import Operation
from agents.signals import operation_finished, operation_step_ran

log = logging.getLogger(__name__)


class StepError(Exception):
    """A step could not finish. `transient` ones are retried with backoff.

    The message is for the customer: the cause in plain words, no host paths or command lines.
    `details` are for staff only (Operation.error_detail)."""

    transient = False

    def __init__(self, message: str, *, details: str = ""):
        super().__init__(message)
        self.details = details


class TransientStepError(StepError):
    transient = True


class PermanentStepError(StepError):
    transient = False


class StepWaiting(Exception):
    """The step cannot proceed until something changes (capacity, a host coming back).

    The operation parks in WAITING with this message, holding no lease, until wake_waiting()
    enqueues it again; its attempts do not count against it.
    """


@dataclass
class Step:
    name: str
    run: Callable[[Operation], dict | None]


@dataclass
class Workflow:
    kind: str
    steps: list[Step]
    # Called (in its own transaction) when the operation fails for good, to make the target's
    # state say so (e.g. a VM in "error"), so nothing stays "building" forever.
    on_failure: Callable[[Operation], None] | None = None
    on_success: Callable[[Operation], None] | None = None
    # Steps that were merged into others: {old name: the step that now does its work}. Rows
    # written before the merge still name the old step and resume at the new one.
    renamed_steps: dict[str, str] = field(default_factory=dict)
    step_names: list[str] = field(init=False)

    def __post_init__(self):
        self.step_names = [step.name for step in self.steps]


_WORKFLOWS: dict[str, Workflow] = {}


def register_workflow(kind: str, steps: list[Step], *, on_failure=None, on_success=None,
                      renamed_steps: dict[str, str] | None = None) -> Workflow:
    workflow = Workflow(kind, steps, on_failure=on_failure, on_success=on_success,
                        renamed_steps=renamed_steps or {})
    _WORKFLOWS[kind] = workflow
    return workflow


def workflow_for(kind: str) -> Workflow | None:
    return _WORKFLOWS.get(kind)


def start_operation(kind: str, *, project=None, target=None, host=None, payload=None, created_by=None) -> Operation:
    """Create the Operation and enqueue its first step once the surrounding transaction commits."""
    workflow = _WORKFLOWS.get(kind)
    if workflow is None:
        raise LookupError(f"no workflow registered for {kind!r}")
    operation = Operation.objects.create(
        kind=kind,
        project=project,
        target_kind=target._meta.model_name if target is not None else "",
        target_uuid=getattr(target, "uuid", None),
        host=host,
        step=workflow.step_names[0],
        steps_total=len(workflow.steps),
        payload=payload or {},
        created_by=created_by if created_by is not None and created_by.is_authenticated else None,
    )
    transaction.on_commit(lambda: send(operation.id))
    return operation


# The Celery task that advances one operation (registered under this name in agents/tasks.py).
ADVANCE_TASK = "agents.advance_operation"


_TASK_IMPORT_LOCK = threading.Lock()


def enqueue(operation_id: int, countdown: float = 0) -> None:
    """Hand the operation to a worker. By task name: the engine does not import its own Celery task
    module (agents/tasks.py imports the engine). The task is looked up in the app's registry, so an
    eager app (CELERY_TASK_ALWAYS_EAGER) still runs it in place."""
    app = current_app
    if ADVANCE_TASK not in app.tasks:
        # One thread imports the apps' tasks modules (autodiscovery) while the others wait for it: a
        # second thread that found the import begun but not done raised NotRegistered, and its
        # operation waited for the resumer (40 creates from threads at once, the lifecycle lab test).
        with _TASK_IMPORT_LOCK:
            if ADVANCE_TASK not in app.tasks:
                app.loader.import_default_modules()
    app.tasks[ADVANCE_TASK].apply_async((operation_id,), countdown=countdown)


def send(operation_id: int, countdown: float = 0) -> bool:
    """enqueue(), but a broker that is down is not the caller's failure: the operation row is
    committed, so it is marked for the resumer (an expired lease: picked up at its next round)
    and the request that made it still succeeds. False when the message was not sent."""
    try:
        if countdown:
            enqueue(operation_id, countdown=countdown)
        else:
            enqueue(operation_id)
        return True
    except Exception as error:  # kombu/redis/amqp each raise their own connection errors
        log.warning("operation %s: not sent to the queue (%s); the resumer sends it", operation_id, error)
    try:
        Operation.objects.filter(id=operation_id, lease_owner="", lease_until__isnull=True).update(
            lease_until=timezone.now())
    except Exception as error:  # the database is gone too: the resumer finds it by its age
        log.warning("operation %s: not marked for the resumer (%s)", operation_id, error)
    return False


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _lease_seconds() -> int:
    return settings.UNCLOUD_OPERATION_LEASE_SECONDS


def claim(operation_id: int) -> Operation | None:
    """Take the lease, or return None when the operation is finished or someone else holds it.

    One statement: the conditional UPDATE hands back the claimed row (RETURNING), so the claim costs
    one round trip, not an UPDATE and a SELECT (the round trips are the control plane's cost).
    Its holder token is the claim's time in ms, but always above the last claim on the same target,
    so a clock that stepped back never ranks current work below a claim that came before it (the
    hosts refuse calls of older claims: agents.hostagent.acting_for)."""
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    params = [OperationState.RUNNING, _worker_id(), adapt(now + timedelta(seconds=_lease_seconds())), adapt(now),
              int(now.timestamp() * 1000), operation_id, OperationState.PENDING, OperationState.RUNNING, adapt(now)]
    claimed = list(Operation.objects.raw(_claim_sql(connection.vendor), params))
    if not claimed:
        return None
    operation = claimed[0]
    operation.host_read_at_claim = True  # the slot check needs not read the host again (hostslots.admitted)
    return operation


@functools.cache
def _claim_sql(vendor: str) -> str:
    """The claim's statement, composed once per process: built by the ORM (an UpdateQuery with a
    subquery in it) it cost a millisecond of Python per claim, the statement itself a tenth."""

    def op(name):
        return column(Operation, name)

    operations = table(Operation)
    greatest = "GREATEST" if vendor == "postgresql" else "MAX"  # SQLite's two-argument MAX is the same
    state, lease_until, token, target = op("state"), op("lease_until"), op("holder_token"), op("target_uuid")
    return (
        f"UPDATE {operations} SET {state} = %s, {op('lease_owner')} = %s, {lease_until} = %s,"
        f" {op('attempts')} = {op('attempts')} + 1, {op('started')} = COALESCE({op('started')}, %s),"
        f" {token} = {greatest}(%s, COALESCE((SELECT MAX(earlier.{token}) FROM {operations} AS earlier"
        f" WHERE earlier.{target} = {operations}.{target}), 0) + 1)"
        f" WHERE {op('id')} = %s AND {state} IN (%s, %s) AND ({lease_until} IS NULL OR {lease_until} < %s)"
        f" RETURNING {columns(Operation)}"
    )


@contextmanager
def commits_unflushed():
    """The body's commits on this connection return before PostgreSQL has flushed them to disk
    (synchronous_commit off for the session, put back afterwards).

    For the engine's writes only: claims, step records, what steps write, the finish. Each commit
    was a disk flush of its own, a dozen on the way from create to running, 1 to 2 ms each on a
    busy disk. What such a commit risks is small and already handled: PostgreSQL keeps commits in
    order and loses at most the newest ones, and only when the database itself crashes, never
    when a worker does. The work then stands where it stood a moment earlier, as if its worker
    had died then, and the engine's steps are idempotent for exactly that. Any later flushed
    commit (an API request's, a payment's) flushes everything before it, so nothing durable
    ever rests on a lost write. What customers and money depend on at once (the API's answers,
    billing) keeps the default."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO off")
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET synchronous_commit TO DEFAULT")
        except DatabaseError:
            pass  # the connection (or its transaction) is gone, and the setting with it


def advance(operation_id: int, *, enqueue_next: bool = True) -> str:
    """Run one step of the operation. Returns what happened (for logs and tests).

    enqueue_next=False leaves the next step to the caller; the row records each step all the same.
    """
    with commits_unflushed():
        operation = claim(operation_id)
        if operation is None:
            return "not-claimed"
        try:
            outcome, _ = _run_step(operation, enqueue_next=enqueue_next)
        finally:
            _report_steps_ran(operation)
    return outcome


def advance_steps(operation_id: int, budget_s: float) -> str:
    """Run the operation's steps back to back for up to budget_s (no round trip through the
    broker between them), then hand the rest to the queue. Returns the last step's outcome.

    Each step is still recorded before the next one starts, in the same UPDATE that renews the
    lease: the worker keeps its claim instead of releasing and claiming again. A worker that dies
    between two steps leaves the operation at its next step, resumed like one that died mid-step.
    """
    deadline = time.monotonic() + budget_s
    with commits_unflushed():
        operation = claimed = claim(operation_id)
        try:
            while operation is not None:
                outcome, operation = _run_step(operation, enqueue_next=True, hold_until=deadline)
                if operation is None:
                    return outcome
        finally:
            if claimed is not None:
                _report_steps_ran(claimed)
    return "not-claimed"


def _current_step(operation: Operation, workflow: Workflow) -> int | None:
    name = workflow.renamed_steps.get(operation.step, operation.step)
    return workflow.step_names.index(name) if name in workflow.step_names else None


def _claimed_target(operation: Operation):
    """The target whose host calls carry this step's claim: one operation at a time works on a VM (or
    a disk, a NIC); a host's own operations (checks, drains, clean-ups) may overlap, so none."""
    return None if operation.target_kind == "host" else operation.target_uuid


def _run_step(operation: Operation, *, enqueue_next: bool, hold_until: float | None = None):
    """Run the claimed operation's current step: (outcome, the operation when this worker still
    holds it for its next step, else None)."""
    workflow = _WORKFLOWS.get(operation.kind)
    if workflow is None:
        _finish(operation, OperationState.FAILED, f"This kind of operation ({operation.kind}) is unknown.")
        return "failed", None
    index = _current_step(operation, workflow)
    if index is None:
        _finish(operation, OperationState.FAILED, f"Unknown step {operation.step!r}.")
        return "failed", None
    if not hostslots.admitted(operation):  # its host has no free worker slot: the worker is for others
        send(operation.id, countdown=hostslots.QUEUED_RETRY_S + 0.1)
        return hostslots.QUEUED_OUTCOME, None
    step = workflow.steps[index]
    step_started = time.monotonic()
    try:
        # Its host calls carry this claim (a late one is refused); the lease is renewed while it runs.
        with lease_renewed(operation), acting_for(_claimed_target(operation), operation.holder_token):
            step_result = step.run(operation) or {}
    except StepWaiting as waiting:
        _step_ran(operation, step.name, step_started, "waiting")
        Operation.objects.filter(id=operation.id, lease_owner=operation.lease_owner).update(
            state=OperationState.WAITING, lease_owner="", lease_until=None, attempts=0, error=str(waiting),
        )
        return "waiting", None
    except StepError as error:
        _step_ran(operation, step.name, step_started, "failed")
        return _step_failed(operation, workflow, error), None
    except (OperationalError, InterfaceError):
        raise  # the database went away mid-step: the task tries again (agents/tasks.py), nothing is decided
    except Exception as error:  # a bug or an unexpected host answer: fail visibly, never hang
        log.exception("operation %s step %s crashed", operation.uuid, step.name)
        _step_ran(operation, step.name, step_started, "failed")
        error = PermanentStepError(f"Internal error in step {step.name}; staff have been told.",
                                   details=f"{type(error).__name__}: {error}")
        return _step_failed(operation, workflow, error), None
    _step_ran(operation, step.name, step_started, "succeeded")

    result = {**operation.result, **step_result}
    if index + 1 < len(workflow.steps):
        next_step = workflow.step_names[index + 1]
        if hold_until is not None and time.monotonic() < hold_until:
            lease_until = timezone.now() + timedelta(seconds=_lease_seconds())
            updated = Operation.objects.filter(id=operation.id, lease_owner=operation.lease_owner).update(
                step=next_step, steps_done=index + 1, attempts=1, lease_until=lease_until, result=result, error="",
            )
            if not updated:
                return "lost-lease", None
            operation.step, operation.steps_done, operation.attempts = next_step, index + 1, 1
            operation.lease_until, operation.result, operation.error = lease_until, result, ""
            return "advanced", operation
        with transaction.atomic():
            updated = Operation.objects.filter(id=operation.id, lease_owner=operation.lease_owner).update(
                step=next_step, steps_done=index + 1, attempts=0, lease_owner="", lease_until=None,
                result=result, error="", error_detail="", updated=timezone.now(),  # sent now: not stale
            )
            if updated and enqueue_next:
                transaction.on_commit(lambda: send(operation.id))
        return ("advanced" if updated else "lost-lease"), None
    operation.result = result
    operation.steps_done = len(workflow.steps)
    _finish(operation, OperationState.SUCCEEDED, "", workflow=workflow)
    return "succeeded", None


def _step_ran(operation: Operation, step: str, started: float, outcome: str) -> None:
    """Note the step's duration; _report_steps_ran() tells the listeners when the worker's turn ends."""
    if not hasattr(operation, "steps_ran"):
        operation.steps_ran = []
    operation.steps_ran.append((step, time.monotonic() - started, outcome))


def _report_steps_ran(operation: Operation) -> None:
    """Step durations are metrics (observability/ records them): sent once the worker's turn on the
    operation is over, so recording them (a statement per step) is not on the way from a create to
    its VM running. A listener's failure is logged, never the step's."""
    ran, operation.steps_ran = getattr(operation, "steps_ran", []), []
    for step, seconds, outcome in ran:
        for _, error in operation_step_ran.send_robust(sender=Operation, operation=operation, step=step,
                                                        seconds=seconds, outcome=outcome):
            if isinstance(error, Exception):
                log.warning("operation_step_ran listener failed: %s", error)


def _operation_ended(operation: Operation, state: str, finished) -> None:
    # In the transaction that ends it: metrics count each operation once, exactly when it ends.
    seconds = (finished - operation.created).total_seconds()
    for _, error in operation_finished.send_robust(sender=Operation, operation=operation, state=state,
                                                    seconds=seconds):
        if isinstance(error, Exception):
            log.warning("operation_finished listener failed: %s", error)


def _backoff_seconds(attempts: int) -> float:
    return min(2 ** attempts, 60)


def _step_failed(operation: Operation, workflow: Workflow, error: StepError) -> str:
    message = str(error)
    detail = "\n".join(part for part in (f"step {operation.step}, attempt {operation.attempts}", error.details) if part)
    if error.transient and operation.attempts < settings.UNCLOUD_OPERATION_MAX_ATTEMPTS:
        delay = _backoff_seconds(operation.attempts)
        # The lease doubles as "not before": nobody claims the operation until the backoff ends.
        Operation.objects.filter(id=operation.id, lease_owner=operation.lease_owner).update(
            lease_owner="", lease_until=timezone.now() + timedelta(seconds=delay), error=message, error_detail=detail,
        )
        send(operation.id, countdown=delay + 0.1)
        return "retrying"
    if error.transient:
        message = f"Gave up after {operation.attempts} attempts: {message}"
    _finish(operation, OperationState.FAILED, message, workflow=workflow, detail=detail)
    return "failed"


class _LeaseLost(Exception):
    """Another worker (or a cancel) took the operation while this one finished it: undo the hook."""


def _finish(operation: Operation, state: str, error: str, workflow: Workflow | None = None, detail: str = "") -> None:
    hook = None
    if workflow is not None:
        hook = workflow.on_success if state == OperationState.SUCCEEDED else workflow.on_failure
    before = operation.state, operation.error
    operation.state, operation.error = state, error
    try:
        with transaction.atomic():
            finished = timezone.now()
            # The hook first: it writes the target's row (a VM's status), and the lock order puts the
            # target's row before its operation's (vms/scheduler.py), as every VM action takes them.
            if hook is not None:
                hook(operation)
            updated = Operation.objects.filter(id=operation.id, lease_owner=operation.lease_owner).update(
                state=state, error=error, error_detail=detail, finished=finished, lease_owner="", lease_until=None,
                result=operation.result, steps_done=operation.steps_done,
            )
            if not updated:
                raise _LeaseLost
            _operation_ended(operation, state, finished)
    except _LeaseLost:
        operation.state, operation.error = before


# Gates that say which parked operations of a kind can proceed now (register_wake_gate); a kind
# without one is woken whenever its wake-up comes.
WakeGate = Callable[[list[Operation]], list[int]]
_WAKE_GATES: dict[str, WakeGate] = {}


def register_wake_gate(kinds: list[str], gate: WakeGate) -> None:
    """gate(waiting operations of these kinds, oldest first) -> the ids worth waking now (e.g. only
    as many VMs as the freed room holds), so one freed slot does not wake every parked operation."""
    for kind in kinds:
        _WAKE_GATES[kind] = gate


def wake_waiting(kinds: list[str] | None = None) -> int:
    """Give parked operations another try (oldest first), e.g. after capacity was freed; kinds with
    a wake gate only as far as their gate lets them."""
    waiting = Operation.objects.filter(state=OperationState.WAITING)
    if kinds:
        waiting = waiting.filter(kind__in=kinds)
    parked = list(waiting.order_by("created", "id")[:500])
    gated: dict[WakeGate, list[Operation]] = {}
    ids = []
    for operation in parked:
        gate = _WAKE_GATES.get(operation.kind)
        if gate is None:
            ids.append(operation.id)
        else:
            gated.setdefault(gate, []).append(operation)
    for gate, operations in gated.items():
        ids.extend(gate(operations))
    if not ids:
        return 0
    with transaction.atomic():
        # Locked in id order first: two wakers (or a waker and the placer) then never wait for each
        # other's rows in opposite orders, as one UPDATE over many rows could.
        ids = list(Operation.objects.select_for_update()
                   .filter(id__in=ids, state=OperationState.WAITING).order_by("id").values_list("id", flat=True))
        woken = Operation.objects.filter(id__in=ids).update(
            state=OperationState.PENDING, updated=timezone.now())  # sent now: not stale for the resumer
    for operation_id in ids:
        if not send(operation_id):
            break  # the broker is down: the resumer sends the rest
    return woken


def active_operation(target_uuid) -> Operation | None:
    """The unfinished operation on a target, if any (the newest)."""
    return (
        Operation.objects.filter(target_uuid=target_uuid).exclude(state__in=TERMINAL_OPERATION_STATES)
        .order_by("-created", "-id").first()
    )


def resume_stalled() -> int:
    """Re-enqueue operations that nobody is advancing: an expired lease or a lost message.
    WAITING ones are left to wake_waiting()."""
    now = timezone.now()
    stale_pending = now - timedelta(seconds=settings.UNCLOUD_OPERATION_STALE_SECONDS)
    stalled = Operation.objects.exclude(state__in=[*TERMINAL_OPERATION_STATES, OperationState.WAITING]).filter(
        Q(lease_until__lt=now) | Q(lease_until__isnull=True, updated__lt=stale_pending)
    )
    ids = list(stalled.values_list("id", flat=True)[:500])
    for sent, operation_id in enumerate(ids):
        if not send(operation_id):
            return sent  # the broker is down: the next round tries again
    return len(ids)


def cancel(operation: Operation, reason: str) -> bool:
    """Mark a not-yet-finished operation cancelled (e.g. its target was deleted)."""
    with transaction.atomic():
        finished = timezone.now()
        cancelled = bool(
            Operation.objects.filter(id=operation.id).exclude(state__in=TERMINAL_OPERATION_STATES).update(
                state=OperationState.CANCELLED, error=reason, finished=finished, lease_owner="", lease_until=None
            )
        )
        if cancelled:
            _operation_ended(operation, OperationState.CANCELLED, finished)
    return cancelled
