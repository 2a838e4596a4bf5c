"""Signals of the proxy app, sent inside the transaction of the change (billing writes its orders in
that same transaction), and the receivers that keep proxy hosts in step with VMs, NICs and keys."""

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import Signal

domain_created = Signal()  # sender=DomainName, domain=
domain_deleted = Signal()  # sender=DomainName, domain=


def _resync_later(*args, created=True, **kwargs):
    if not created:
        return  # a NIC or key edited in place (its status) leaves the addresses and keys as they were
    from proxy.workflows import request_proxy_sync

    transaction.on_commit(request_proxy_sync)


def _vm_deleted(sender, vm, **kwargs):
    """A deleted VM's names go with it (their orders end in this transaction)."""
    from proxy.actions import do_delete_domain

    for domain in vm.domain_names.all():
        do_delete_domain(None, domain)
    _resync_later()


def connect():
    from networks.models import NIC
    from vms import signals as vm_signals
    from vms.models import VM, SSHKey

    vm_signals.vm_deleted.connect(_vm_deleted, sender=VM, dispatch_uid="proxy.vm_deleted")
    # The jump host lets a project's keys reach its VMs' addresses: keys and NICs change that list.
    for model in (SSHKey, NIC):
        post_save.connect(_resync_later, sender=model, dispatch_uid=f"proxy.resync_{model.__name__}_saved")
        post_delete.connect(_resync_later, sender=model, dispatch_uid=f"proxy.resync_{model.__name__}_deleted")
