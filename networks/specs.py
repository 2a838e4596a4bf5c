"""Network rows as host-side specs (agents/hostside: net-up / net-down)."""

from django.conf import settings

from networks.models import Network


def net_up_spec(network: Network, host) -> dict:
    spec = {"vni": network.vni, "prefix": network.prefix, "underlay_device": host.underlay_device}
    if settings.UNCLOUD_DNS_SERVERS:
        spec["dns_servers"] = settings.UNCLOUD_DNS_SERVERS[:3]
    if settings.UNCLOUD_DNS_SEARCH:
        spec["dns_search"] = settings.UNCLOUD_DNS_SEARCH[:6]
    return spec
