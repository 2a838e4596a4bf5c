"""Listeners that record step and job durations (the engine and Celery know nothing of metrics)."""

import logging
import time

from django.db import transaction
from django.utils import timezone

from observability.models import JobRun, StepTiming

log = logging.getLogger(__name__)

# Periodic tasks whose run time is a metric (uncloud_job_duration_seconds).
TIMED_TASKS = frozenset({
    "billing.run_monthly_billing", "billing.run_dunning", "vms.reconcile_all", "images.sweep",
    "agents.resume_stalled_operations", "observability.sample_vms",
})
_started: dict[str, tuple[float, object]] = {}


def on_operation_step_ran(sender, operation, step, seconds, outcome, **kwargs):
    with transaction.atomic():  # a savepoint: a failed insert never breaks the caller's transaction
        StepTiming.objects.create(kind=operation.kind, step=step, outcome=outcome, seconds=seconds)


def on_task_prerun(sender=None, task_id=None, task=None, **kwargs):
    if task is not None and task.name in TIMED_TASKS:
        _started[task_id] = (time.monotonic(), timezone.now())


def on_task_postrun(sender=None, task_id=None, task=None, state=None, **kwargs):
    begun = _started.pop(task_id, None)
    if begun is None:
        return
    try:
        JobRun.objects.create(task=task.name, started=begun[1], seconds=time.monotonic() - begun[0],
                              succeeded=state == "SUCCESS")
    except Exception:  # a metric must never fail the job it measures
        log.exception("could not record the run of %s", task.name)
