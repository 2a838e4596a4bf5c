"""Network rows as host-side specs (agents/hostside: net-up, nic-attach, vm-firewall, nat64-sync)."""

from django.conf import settings

from networks.models import NIC, IPv4Address, IPv4Pool, Network


def net_up_spec(network: Network, host) -> dict:
    spec = {"vni": network.vni, "prefix": network.prefix, "underlay_device": host.underlay_device,
            "default_router": True, "routes": nat64_routes(host)}
    if host.underlay_address:
        # The VXLAN devices send from (and are bound to) this address on the underlay device.
        spec["underlay_address"] = host.underlay_address
    if settings.UNCLOUD_DNS_SERVERS:
        spec["dns_servers"] = settings.UNCLOUD_DNS_SERVERS[:3]
    if settings.UNCLOUD_DNS_SEARCH:
        spec["dns_search"] = settings.UNCLOUD_DNS_SEARCH[:6]
    return spec


def nat64_routes(host) -> list[dict]:
    """Guests answer IPv4 senders (inside a pool's NAT64 /96) through the pool's translator host."""
    routes = {}
    pools = IPv4Pool.objects.filter(is_active=True).exclude(nat64_host=host).select_related("nat64_host")
    for pool in pools:
        if pool.nat64_host.underlay_address:
            routes.setdefault(pool.nat64_prefix, {"prefix": pool.nat64_prefix, "via": pool.nat64_host.underlay_address})
    return list(routes.values())


def ingress_spec(vm) -> list[dict]:
    return [rule.as_spec() for rule in vm.ingress_rules.all()]


def nic_spec(nic: NIC, ingress: list[dict]) -> dict:
    return {"mac": nic.mac, "vni": nic.network.vni, "ipv6": nic.ipv6_address, "index": nic.index,
            "ingress": ingress}


def nat64_sync_spec(host) -> dict:
    """Every pool this host translates for, with the maps of addresses whose VM has a host."""
    pools = []
    for pool in IPv4Pool.objects.filter(nat64_host=host, is_active=True).order_by("id"):
        maps = []
        mapped = IPv4Address.objects.filter(pool=pool, nic__isnull=False, nic__vm__host__isnull=False)
        for address in mapped.select_related("nic__vm__host").order_by("id"):
            vm_host = address.nic.vm.host
            if vm_host.pk != host.pk and not vm_host.underlay_address:
                continue  # no route to it; the address reports why (see mapping_problem)
            maps.append({"ipv4": address.address, "ipv6": address.nic.ipv6_address,
                         "via": None if vm_host.pk == host.pk else vm_host.underlay_address})
        pools.append({"id": pool.pk, "prefix": pool.prefix, "nat64_prefix": pool.nat64_prefix,
                      "translator_address": pool.translator_address, "maps": maps})
    return {"underlay_device": host.underlay_device, "pools": pools}
