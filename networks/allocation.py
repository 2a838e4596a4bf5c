"""Allocation of VNIs, /64s and MACs: serialized by a row lock on the pool, backed by unique constraints."""

import ipaddress

from django.conf import settings
from django.db import IntegrityError, transaction

from accounts.errors import Conflict
from networks.addressing import eui64_address, random_local_mac
from networks.models import NIC, Network, PrefixPool


def _lock_pool() -> PrefixPool:
    pool = PrefixPool.objects.select_for_update().filter(is_active=True).order_by("id").first()
    if pool is None:
        raise Conflict("No IPv6 prefix pool is configured; staff must add one.")
    return pool


def next_free_vni() -> int:
    used = set(Network.objects.filter(vni__gte=settings.UNCLOUD_VNI_MIN).values_list("vni", flat=True))
    for vni in range(settings.UNCLOUD_VNI_MIN, settings.UNCLOUD_VNI_MAX + 1):
        if vni not in used:
            return vni
    raise Conflict("No free VNI is left.")


def next_free_prefix(pool: PrefixPool) -> str:
    used = set(Network.objects.values_list("prefix", flat=True))
    for subnet in ipaddress.IPv6Network(pool.prefix).subnets(new_prefix=64):
        if str(subnet) not in used:
            return str(subnet)
    raise Conflict(f"The prefix pool {pool.prefix} has no free /64 left.")


def create_network_row(*, project, name: str, is_public: bool = False) -> Network:
    """Allocate a VNI and a /64 and create the network, all under the pool lock (call inside atomic)."""
    pool = _lock_pool()
    return Network.objects.create(
        project=project, name=name, is_public=is_public, pool=pool, vni=next_free_vni(), prefix=next_free_prefix(pool)
    )


def create_nic_row(vm, network: Network, index: int) -> NIC:
    for _ in range(10):
        mac = random_local_mac(settings.UNCLOUD_MAC_PREFIX)
        try:
            with transaction.atomic():
                return NIC.objects.create(
                    vm=vm, network=network, index=index, mac=mac, ipv6_address=eui64_address(network.prefix, mac)
                )
        except IntegrityError:
            if NIC.objects.filter(vm=vm, index=index).exists():
                raise
    raise Conflict("Could not find a free MAC address; widen UNCLOUD_MAC_PREFIX.")
