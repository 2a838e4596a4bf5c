"""Thin Celery tasks: the Operation row holds the state, these only carry 'go on with N'."""

from celery import shared_task
from django.db import InterfaceError, OperationalError, close_old_connections

from agents import hostslots, operations

# One task runs the steps of its operation back to back for up to this long, then hands the rest
# to the queue again so long workflows do not hold a worker forever.
CHAIN_BUDGET_S = 30


@shared_task(name=operations.ADVANCE_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=20)
def advance_operation(self, operation_id: int) -> str:
    # Each step is still recorded on its own before the next starts (see advance_steps).
    try:
        outcome = operations.advance_steps(operation_id, CHAIN_BUDGET_S)
    except (OperationalError, InterfaceError) as error:
        # The database went away (a restart, a failover): a failed task would be acked and its
        # message lost, leaving the operation to the resumer. Try again shortly instead.
        close_old_connections()
        raise self.retry(exc=error, countdown=min(1 + self.request.retries, 5)) from None
    if outcome not in ("not-claimed", hostslots.QUEUED_OUTCOME):
        # This worker's turn on the operation's host is over: the next one queued for it may go.
        for queued_id in hostslots.queued_to_wake(operation_id):
            operations.send(queued_id)
    return outcome


@shared_task(name="agents.resume_stalled_operations")
def resume_stalled_operations() -> int:
    return operations.resume_stalled()
