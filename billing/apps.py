from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing and payments"

    def ready(self):
        from billing import actions
        from vms import signals
        from vms.models import VM

        # Orders are written in the VM's own transaction: no VM without its order, and back.
        signals.vm_created.connect(actions.on_vm_created, sender=VM, dispatch_uid="billing.vm_created")
        signals.vm_resized.connect(actions.on_vm_resized, sender=VM, dispatch_uid="billing.vm_resized")
        signals.vm_deleted.connect(actions.on_vm_deleted, sender=VM, dispatch_uid="billing.vm_deleted")
