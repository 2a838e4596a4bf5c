from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing and payments"

    def ready(self):
        from billing import actions, checks, dunning  # noqa: F401  (checks registers)
        from billing import signals as billing_signals
        from vms import signals
        from vms.models import VM

        billing_signals.bills_settled.connect(dunning.on_bills_settled, dispatch_uid="billing.resume_after_payment")
        # Orders are written in the VM's own transaction: no VM without its order, and back.
        signals.vm_created.connect(actions.on_vm_created, sender=VM, dispatch_uid="billing.vm_created")
        signals.vm_resized.connect(actions.on_vm_resized, sender=VM, dispatch_uid="billing.vm_resized")
        signals.vm_deleted.connect(actions.on_vm_deleted, sender=VM, dispatch_uid="billing.vm_deleted")

        from networks import signals as network_signals
        from networks.models import IPv4Address

        network_signals.ipv4_allocated.connect(actions.on_ipv4_allocated, sender=IPv4Address,
                                               dispatch_uid="billing.ipv4_allocated")
        network_signals.ipv4_released.connect(actions.on_ipv4_released, sender=IPv4Address,
                                              dispatch_uid="billing.ipv4_released")

        from proxy import signals as proxy_signals
        from proxy.models import DomainName

        proxy_signals.domain_created.connect(actions.on_domain_created, sender=DomainName,
                                             dispatch_uid="billing.domain_created")
        proxy_signals.domain_deleted.connect(actions.on_domain_deleted, sender=DomainName,
                                             dispatch_uid="billing.domain_deleted")
