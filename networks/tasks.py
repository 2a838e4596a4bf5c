"""Thin Celery tasks of the networks app."""

from celery import shared_task

from networks import firewall
from networks.models import Firewall


@shared_task(name="networks.apply_firewall", bind=True, acks_late=True, max_retries=60)
def apply_firewall(self, vm_id: int) -> str:
    outcome = firewall.apply_firewall(vm_id)
    if outcome == firewall.LATER:
        if self.request.retries >= self.max_retries:
            Firewall.objects.filter(vm_id=vm_id).update(error="The host did not take the rules; retrying with the "
                                                              "next change or restart.")
            return firewall.FAILED
        raise self.retry(countdown=min(2 + self.request.retries, 15))
    return outcome
