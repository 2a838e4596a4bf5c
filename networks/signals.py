"""Signals of the networks app, sent inside the transaction of the change (billing writes its
orders in that same transaction), and the receivers this app needs for other apps' changes."""

from django.db import transaction
from django.db.models.signals import pre_delete
from django.dispatch import Signal

ipv4_allocated = Signal()  # sender=IPv4Address, address=
ipv4_released = Signal()  # sender=IPv4Address, address=


def _resync_mapped_pools(sender, instance, **kwargs):
    """A NIC that goes (its VM deleted, or detached) takes its IPv4 maps along: tell the translator."""
    from networks.models import IPv4Pool
    from networks.workflows import request_nat64_sync

    pool_ids = list(instance.ipv4_addresses.values_list("pool_id", flat=True))
    if pool_ids:
        def resync():
            for pool in IPv4Pool.objects.filter(pk__in=pool_ids):
                with transaction.atomic():
                    request_nat64_sync(pool)
        transaction.on_commit(resync)


def connect():
    from networks.models import NIC

    pre_delete.connect(_resync_mapped_pools, sender=NIC, dispatch_uid="networks.nic_resync_nat64")
