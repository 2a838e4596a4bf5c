from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "Virtual machines"

    def ready(self):
        from vms import disk_workflows, drain, failover, migration, nic_workflows, workflows  # noqa: F401  (register their workflows)

        failover.install()  # what the heartbeat watcher (agents/liveness.py) does to VMs of a failed host
