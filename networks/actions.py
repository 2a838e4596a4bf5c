"""Customer networks: create, rename, delete (a VM joins one through vms/networking.py)."""

from django.db import transaction

from accounts import audit
from accounts.errors import Conflict
from networks.allocation import create_network_row
from networks.models import Network


@transaction.atomic
def do_create_network(actor, project, name: str) -> Network:
    if Network.objects.filter(project=project, name=name).exists():
        raise Conflict(f"This project already has a network named {name!r}.")
    network = create_network_row(project=project, name=name)
    audit.record(actor, "network.create", project=project, target=network, vni=network.vni, prefix=network.prefix)
    return network


@transaction.atomic
def do_create_public_network(actor, name: str) -> Network:
    network = create_network_row(project=None, name=name, is_public=True)
    audit.record(actor, "network.create_public", target=network, vni=network.vni, prefix=network.prefix)
    return network


@transaction.atomic
def do_rename_network(actor, network: Network, name: str) -> Network:
    if Network.objects.filter(project=network.project, name=name).exclude(pk=network.pk).exists():
        raise Conflict(f"This project already has a network named {name!r}.")
    network.name = name
    network.save(update_fields=["name"])
    audit.record(actor, "network.rename", project=network.project, target=network, name=name)
    return network


@transaction.atomic
def do_delete_network(actor, network: Network) -> None:
    in_use = network.nics.count()
    if in_use:
        raise Conflict(f"The network is still used by {in_use} NIC(s); detach them first.")
    audit.record(actor, "network.delete", project=network.project, target=network, vni=network.vni)
    network.delete()
