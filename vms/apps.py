from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"
    verbose_name = "Virtual machines"

    def ready(self):
        from vms import drain, migration, workflows  # noqa: F401  (registers the VM workflows with the engine)
