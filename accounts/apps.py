from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts, projects and audit"

    def ready(self):
        from accounts import signals  # noqa: F401  every user gets an Identity (origin)
        from accounts.api import schema  # noqa: F401  registers the OpenAPI auth scheme
