from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"
    verbose_name = "Hypervisors and operations"

    def ready(self):
        from agents import hosts  # noqa: F401  registers the host.check workflow
