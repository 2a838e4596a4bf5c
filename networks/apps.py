from django.apps import AppConfig


class NetworksConfig(AppConfig):
    name = "networks"
    verbose_name = "Networks"

    def ready(self):
        from networks import checks, signals, workflows  # noqa: F401  (checks and workflows register themselves)

        signals.connect()
