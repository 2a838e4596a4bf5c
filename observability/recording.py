"""Listeners that record step and job durations (the engine and Celery know nothing of metrics)."""

import bisect
import logging
import time

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from observability.models import JobStat, OperationDuration, StepDuration

log = logging.getLogger(__name__)

# Seconds; the operation histogram's bounds (uncloud_operation_duration_seconds). Lifecycle operations
# under TCG take 5 s to minutes; a drain or a big image longer.
OPERATION_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800, 3600)
# Seconds; the step histogram's bounds (uncloud_operation_step_duration_seconds).
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
# Periodic tasks whose run time is a metric (uncloud_job_*).
TIMED_TASKS = frozenset({
    "billing.run_monthly_billing", "billing.run_dunning", "vms.reconcile_all", "images.sweep",
    "agents.resume_stalled_operations", "observability.sample_vms",
})
_started: dict[str, tuple[float, object]] = {}


def _count_up(model, key: dict, **changes) -> None:
    """UPDATE the row by `key` with `changes` (F expressions), creating it first when missing; two
    writers racing to create it both end up counted."""
    with transaction.atomic():  # a savepoint: a failure never breaks the caller's transaction
        if model.objects.filter(**key).update(**changes):
            return
        try:
            with transaction.atomic():
                model.objects.create(**key)
        except IntegrityError:
            pass
        model.objects.filter(**key).update(**changes)


def _add_duration(model, key: dict, seconds: float) -> None:
    """One more of `key` taking `seconds`: one statement (an upsert on the row's unique key), where
    _count_up costs a transaction of its own or a savepoint, three round trips. These run for every
    step of every operation, on the worker's path from create to running. The statement cannot
    conflict, so it needs no savepoint to keep a failure from the caller's transaction."""
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    names = [*key, "count", "seconds"]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(quote(name) for name in names)}) "
            f"VALUES ({', '.join(['%s'] * len(names))}) ON CONFLICT ({', '.join(quote(name) for name in key)}) "
            f'DO UPDATE SET "count" = {table}."count" + EXCLUDED."count", '
            f'"seconds" = {table}."seconds" + EXCLUDED."seconds"',
            [*key.values(), 1, seconds])


def on_operation_step_ran(sender, operation, step, seconds, outcome, **kwargs):
    bucket = bisect.bisect_left(STEP_BUCKETS, seconds)
    _add_duration(StepDuration, {"kind": operation.kind, "step": step, "outcome": outcome, "bucket": bucket}, seconds)


def on_operation_finished(sender, operation, state, seconds, **kwargs):
    bucket = bisect.bisect_left(OPERATION_BUCKETS, seconds)
    _add_duration(OperationDuration, {"kind": operation.kind, "state": state, "bucket": bucket}, seconds)


def on_task_prerun(sender=None, task_id=None, task=None, **kwargs):
    if task is not None and task.name in TIMED_TASKS:
        _started[task_id] = (time.monotonic(), timezone.now())


def on_task_postrun(sender=None, task_id=None, task=None, state=None, **kwargs):
    begun = _started.pop(task_id, None)
    if begun is None:
        return
    seconds, succeeded = time.monotonic() - begun[0], state == "SUCCESS"
    try:
        _count_up(JobStat, {"task": task.name}, runs=F("runs") + 1, seconds=F("seconds") + seconds,
                  failures=F("failures") + (0 if succeeded else 1), last_started=begun[1],
                  last_seconds=seconds, last_succeeded=succeeded)
    except Exception:  # a metric must never fail the job it measures
        log.exception("could not record the run of %s", task.name)
