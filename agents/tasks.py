"""Thin Celery tasks: the Operation row holds the state, these only carry 'go on with N'."""

from celery import shared_task

from agents import operations


@shared_task(name="agents.advance_operation", acks_late=True, reject_on_worker_lost=True)
def advance_operation(operation_id: int) -> str:
    return operations.advance(operation_id)


@shared_task(name="agents.resume_stalled_operations")
def resume_stalled_operations() -> int:
    return operations.resume_stalled()
