"""Proxy rows as host-side specs (agents/hostside: proxy-sync, jump-sync)."""

from django.conf import settings

from proxy.choices import DomainStatus
from proxy.models import DomainName, ProxyHost
from vms.choices import VMStatus
from vms.models import VM, SSHKey

GONE = (VMStatus.DELETING, VMStatus.DELETED)


def _first_address(vm) -> str | None:
    nics = sorted(vm.nics.all(), key=lambda nic: nic.index)
    return nics[0].ipv6_address if nics else None


def _route(vm, host, routes: dict) -> None:
    """Guests on another host are reached over the underlay (their host routes them to its bridge)."""
    if vm.host_id is not None and vm.host_id != host.pk and vm.host.underlay_address:
        for nic in vm.nics.all():
            routes[nic.ipv6_address] = vm.host.underlay_address


def proxy_sync_spec(proxy_host: ProxyHost, routes: dict | None = None) -> dict:
    host = proxy_host.host
    routes = {} if routes is None else routes
    names = []
    domains = (DomainName.objects.filter(status__in=[DomainStatus.PENDING, DomainStatus.PROVEN])
               .exclude(vm__status__in=GONE).select_related("vm__host").prefetch_related("vm__nics").order_by("name"))
    for domain in domains:
        address = _first_address(domain.vm)
        if address is None:
            continue  # a VM without NICs has nowhere to be reached
        names.append({"name": domain.name, "ipv6": address, "proxy_protocol": domain.proxy_protocol,
                      "serve": "all" if domain.status == DomainStatus.PROVEN else "challenge"})
        _route(domain.vm, host, routes)
    return {"underlay_device": host.underlay_device, "bind_ipv4": proxy_host.bind_ipv4, "names": names,
            "routes": [{"ipv6": address, "via": via} for address, via in sorted(routes.items())],
            "enabled": proxy_host.is_active}


def jump_sync_spec(proxy_host: ProxyHost, routes: dict) -> dict:
    """Each project's keys may reach port 22 of that project's VMs, nothing else."""
    permits: dict[int, set] = {}
    for vm in VM.objects.exclude(status__in=GONE).select_related("host").prefetch_related("nics"):
        addresses = {nic.ipv6_address for nic in vm.nics.all()}
        if addresses:
            permits.setdefault(vm.project_id, set()).update(addresses)
            _route(vm, proxy_host.host, routes)
    keys = [{"key": key.public_key, "permit": sorted(permits[key.project_id])}
            for key in SSHKey.objects.filter(project_id__in=permits).order_by("id")]
    return {"keys": keys, "listen": [proxy_host.bind_ipv4], "port": proxy_host.jump_port,
            "user": settings.UNCLOUD_PROXY_JUMP_USER, "enabled": proxy_host.is_active}


def proxy_host_specs(proxy_host: ProxyHost) -> list[dict]:
    """The host's whole proxy state as one batch: the jump's routes ride along with proxy-sync's."""
    routes: dict = {}
    jump = jump_sync_spec(proxy_host, routes)
    proxy = proxy_sync_spec(proxy_host, routes)
    return [{"verb": "proxy-sync", "spec": proxy}, {"verb": "jump-sync", "spec": jump}]
