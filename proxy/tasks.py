from celery import shared_task
from django.db import transaction

from proxy.workflows import request_proxy_sync


@shared_task(name="proxy.sync_all")
def sync_all() -> None:
    """Beat: every proxy host gets its whole state again, so nothing drifts for long: a VM that moved to
    another host (its route), a proxy process that died, a change whose sync failed."""
    with transaction.atomic():
        request_proxy_sync()
