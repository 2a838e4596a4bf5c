"""Warnings about the site's network settings: at start-up (Django's system checks, which migrate
and bin/run print) and on the admin's index page."""

from django.conf import settings
from django.core import checks


def dns_warning() -> str:
    """Why guests cannot resolve names, or "" when at least one DNS server is announced."""
    if settings.UNCLOUD_DNS_SERVERS:
        return ""
    return ("No DNS server is announced to guests: UNCLOUD_DNS_SERVERS is empty and this machine's "
            "/etc/resolv.conf names no global IPv6 name server, so guests cannot resolve names. "
            "Set UNCLOUD_DNS_SERVERS to resolvers the guests can reach.")


@checks.register(checks.Tags.compatibility)
def check_dns_servers(app_configs, **kwargs):
    warning = dns_warning()
    return [checks.Warning(warning, id="networks.W001")] if warning else []
