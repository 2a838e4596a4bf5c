"""Thin Celery tasks: the Operation row holds the state, these only carry 'go on with N'."""

import time

from celery import shared_task

from agents import operations

# One task runs the steps of its operation back to back for up to this long, then hands the rest
# to the queue again so long workflows do not hold a worker forever.
CHAIN_BUDGET_S = 30


@shared_task(name="agents.advance_operation", acks_late=True, reject_on_worker_lost=True)
def advance_operation(operation_id: int) -> str:
    # Each step is still claimed, run and recorded on its own: a worker that dies between two
    # steps leaves a released operation that resume_stalled() picks up.
    deadline = time.monotonic() + CHAIN_BUDGET_S
    while True:
        outcome = operations.advance(operation_id, enqueue_next=False)
        if outcome != "advanced":
            return outcome
        if time.monotonic() > deadline:
            operations.enqueue(operation_id)
            return outcome


@shared_task(name="agents.resume_stalled_operations")
def resume_stalled_operations() -> int:
    return operations.resume_stalled()
