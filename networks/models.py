import ipaddress
import uuid

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from networks.addressing import VNI_MAX, VNI_MIN
from networks.choices import NetworkStatus


def validate_ipv6_prefix(value: str) -> None:
    try:
        network = ipaddress.IPv6Network(value, strict=True)
    except ValueError as error:
        raise ValidationError(f"{value!r} is not an IPv6 prefix: {error}") from None
    if network.prefixlen > 64:
        raise ValidationError("A pool must be a /64 or larger.")


class PrefixPool(models.Model):
    """Where customer /64s come from: staff add e.g. a /48; networks take the next free /64."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    prefix = models.CharField(max_length=49, unique=True, validators=[validate_ipv6_prefix])
    description = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return self.prefix


class Network(models.Model):
    """One customer (or the site's public) layer-2 network: a VXLAN, a bridge per host, one /64."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey("accounts.Project", null=True, blank=True, on_delete=models.PROTECT)
    name = models.CharField(max_length=100)
    vni = models.PositiveIntegerField(unique=True, validators=[MinValueValidator(VNI_MIN), MaxValueValidator(VNI_MAX)])
    prefix = models.CharField(max_length=49, unique=True)
    pool = models.ForeignKey(PrefixPool, null=True, blank=True, on_delete=models.PROTECT)
    is_public = models.BooleanField(default=False, help_text="The site's public network, where VMs land by default")
    status = models.CharField(max_length=10, choices=NetworkStatus.choices, default=NetworkStatus.ACTIVE)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(vni__gte=VNI_MIN, vni__lte=VNI_MAX), name="network_vni_range"),
            models.CheckConstraint(
                condition=models.Q(is_public=False) | models.Q(project__isnull=True), name="public_network_has_no_project"
            ),
            models.UniqueConstraint(fields=["project", "name"], name="network_name_unique_per_project"),
        ]

    def __str__(self):
        return f"{self.name} ({self.prefix})"


class NIC(models.Model):
    """A VM's port on a network. Its MAC, and so its SLAAC address, are known before boot."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    vm = models.ForeignKey("vms.VM", on_delete=models.CASCADE, related_name="nics")
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="nics")
    index = models.PositiveSmallIntegerField(default=0)
    mac = models.CharField(max_length=17, unique=True)
    ipv6_address = models.GenericIPAddressField(protocol="IPv6", unique=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["vm_id", "index"]
        constraints = [models.UniqueConstraint(fields=["vm", "index"], name="nic_index_unique_per_vm")]

    def __str__(self):
        return f"{self.mac} {self.ipv6_address}"
