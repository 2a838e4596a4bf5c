from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "Virtual machines"

    def ready(self):
        from vms import drain, failover, migration, workflows  # noqa: F401  (registers the VM workflows)

        failover.install()  # what the heartbeat watcher (agents/liveness.py) does to VMs of a failed host
