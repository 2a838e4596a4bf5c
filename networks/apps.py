from django.apps import AppConfig


class NetworksConfig(AppConfig):
    name = "networks"
    verbose_name = "Networks"

    def ready(self):
        from networks import signals, workflows  # noqa: F401  (the workflows register with the engine)

        signals.connect()
