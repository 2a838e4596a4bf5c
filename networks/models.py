import ipaddress
import uuid

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from networks.addressing import VNI_MAX, VNI_MIN
from networks.choices import IngressProtocol, IPv4Status, NetworkStatus, NICStatus


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
    status = models.CharField(max_length=10, choices=NICStatus.choices, default=NICStatus.ATTACHED)
    status_message = models.CharField(max_length=2000, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "NIC"
        verbose_name_plural = "NICs"
        ordering = ["vm_id", "index"]
        constraints = [models.UniqueConstraint(fields=["vm", "index"], name="nic_index_unique_per_vm")]

    def __str__(self):
        return f"{self.mac} {self.ipv6_address}"


class Firewall(models.Model):
    """A VM's rule set as a whole: every change bumps `version`; hosts report what they applied."""

    vm = models.OneToOneField("vms.VM", on_delete=models.CASCADE, related_name="firewall")
    version = models.PositiveIntegerField(default=0)
    applied_version = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=2000, blank=True)
    updated = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"firewall of {self.vm_id} v{self.version}"

    @property
    def is_applied(self) -> bool:
        return self.applied_version >= self.version


class IngressRule(models.Model):
    """One opening in a VM's stateful firewall (its security group): traffic towards the VM that
    matches is let in. With no rules only ICMPv6 and replies to the VM's own traffic get in."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    vm = models.ForeignKey("vms.VM", on_delete=models.CASCADE, related_name="ingress_rules")
    protocol = models.CharField(max_length=6, choices=IngressProtocol.choices)
    port_min = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1),
                                                                              MaxValueValidator(65535)])
    port_max = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1),
                                                                              MaxValueValidator(65535)])
    source = models.CharField(max_length=49, default="::/0", help_text="IPv6 prefix the traffic comes from")
    description = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["vm_id", "id"]

    def __str__(self):
        ports = "" if self.port_min is None else f" {self.port_min}" + (
            f"-{self.port_max}" if self.port_max != self.port_min else "")
        return f"{self.protocol}{ports} from {self.source}"

    def as_spec(self) -> dict:
        spec = {"protocol": self.protocol, "source": self.source}
        if self.port_min is not None:
            spec |= {"port_min": self.port_min, "port_max": self.port_max}
        return spec


def validate_ipv4_prefix(value: str) -> None:
    try:
        ipaddress.IPv4Network(value, strict=True)
    except ValueError as error:
        raise ValidationError(f"{value!r} is not an IPv4 prefix: {error}") from None


def validate_nat64_prefix(value: str) -> None:
    try:
        network = ipaddress.IPv6Network(value, strict=True)
    except ValueError as error:
        raise ValidationError(f"{value!r} is not an IPv6 prefix: {error}") from None
    if network.prefixlen != 96:
        raise ValidationError("A NAT64 prefix is a /96 (for example 64:ff9b::/96).")


class IPv4Pool(models.Model):
    """Public IPv4 addresses that staff route to a NAT64 host; each maps 1:1 to a VM's IPv6 address."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    prefix = models.CharField(max_length=18, unique=True, validators=[validate_ipv4_prefix],
                              help_text="The addresses customers get, e.g. 192.0.2.0/28")
    nat64_host = models.ForeignKey("agents.Host", on_delete=models.PROTECT, related_name="ipv4_pools",
                                   help_text="The host that runs the translator (tayga) for this pool")
    nat64_prefix = models.CharField(max_length=49, default="64:ff9b::/96", validators=[validate_nat64_prefix],
                                    help_text="IPv4 senders appear to the VMs inside this /96")
    translator_address = models.GenericIPAddressField(
        protocol="IPv4", help_text="The translator's own IPv4 address (source of its ICMP errors); "
                                   "outside the pool")
    description = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "IPv4 pool"

    def __str__(self):
        return self.prefix

    def clean(self):
        try:
            inside = ipaddress.IPv4Address(self.translator_address) in ipaddress.IPv4Network(self.prefix)
        except ValueError:
            return
        if inside:
            raise ValidationError({"translator_address": "The translator's address must lie outside the pool."})


class IPv4Address(models.Model):
    """A public IPv4 address a project holds (and pays for), mapped to one of its VMs or to none."""


    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    pool = models.ForeignKey(IPv4Pool, on_delete=models.PROTECT, related_name="addresses")
    address = models.GenericIPAddressField(protocol="IPv4", unique=True)
    project = models.ForeignKey("accounts.Project", on_delete=models.PROTECT, related_name="ipv4_addresses")
    # Mapped to one NIC's IPv6 address (a VM's first NIC unless the customer names another).
    nic = models.ForeignKey(NIC, null=True, blank=True, on_delete=models.SET_NULL, related_name="ipv4_addresses")
    status = models.CharField(max_length=10, choices=IPv4Status.choices, default=IPv4Status.PENDING)
    status_message = models.CharField(max_length=2000, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "IPv4 address"
        verbose_name_plural = "IPv4 addresses"

    def __str__(self):
        return self.address
