from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "proxy"
    verbose_name = "IPv4 proxy and SSH jump host"

    def ready(self):
        from proxy import signals, workflows  # noqa: F401  (workflows register themselves)

        signals.connect()
