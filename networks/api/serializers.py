from rest_framework import serializers

from accounts.api.mixins import ProjectField, ScopedRelatedField
from accounts.scoping import scoped
from networks.addressing import multicast_group
from networks.choices import IngressProtocol
from networks.models import NIC, IngressRule, IPv4Address, Network
from networks.visibility import networks_visible_to


def vms_visible_to(user):
    from vms.choices import VMStatus
    from vms.models import VM

    return scoped(VM.objects.exclude(status=VMStatus.DELETED), user)


def nics_visible_to(user):
    return scoped(NIC.objects.select_related("vm"), user, field="vm__project")


class NetworkSerializer(serializers.ModelSerializer):
    # null: a public network, which belongs to no project (null in a create means your default project).
    project = ProjectField(required=False, allow_null=True)
    multicast_group = serializers.SerializerMethodField()

    class Meta:
        model = Network
        fields = ["uuid", "project", "name", "vni", "prefix", "multicast_group", "is_public", "status", "created"]
        read_only_fields = ["uuid", "vni", "prefix", "is_public", "status", "created"]
        # Uniqueness is checked by the action (409), not by DRF (which would also make `project` required).
        validators = []

    def get_multicast_group(self, network) -> str:
        return multicast_group(network.vni)


class NetworkUpdateSerializer(serializers.ModelSerializer):
    class Meta:
        model = Network
        fields = ["name"]


class NICSerializer(serializers.ModelSerializer):
    vm = serializers.SlugRelatedField(slug_field="uuid", read_only=True)
    network = serializers.SlugRelatedField(slug_field="uuid", read_only=True)
    ipv4_addresses = serializers.SlugRelatedField(slug_field="address", many=True, read_only=True)

    class Meta:
        model = NIC
        fields = ["uuid", "vm", "network", "index", "mac", "ipv6_address", "ipv4_addresses", "status",
                  "status_message", "created"]
        read_only_fields = fields


class NICAttachSerializer(serializers.Serializer):
    vm = ScopedRelatedField(vms_visible_to)
    network = ScopedRelatedField(networks_visible_to)

    def validate(self, attrs):
        network, vm = attrs["network"], attrs["vm"]
        if not network.is_public and network.project_id != vm.project_id:
            raise serializers.ValidationError({"network": "The network and the VM must be in the same project."})
        return attrs


class IngressRuleSerializer(serializers.ModelSerializer):
    protocol = serializers.ChoiceField(choices=IngressProtocol.choices)
    port_min = serializers.IntegerField(min_value=1, max_value=65535, required=False, allow_null=True)
    port_max = serializers.IntegerField(min_value=1, max_value=65535, required=False, allow_null=True)
    source = serializers.CharField(max_length=49, required=False, default="::/0")

    class Meta:
        model = IngressRule
        fields = ["protocol", "port_min", "port_max", "source", "description"]


class FirewallSerializer(serializers.Serializer):
    """A VM's whole rule set. PUT replaces it at once; `applied` says the VM's host has it."""

    rules = IngressRuleSerializer(many=True)
    version = serializers.IntegerField(read_only=True)
    applied = serializers.BooleanField(read_only=True)
    error = serializers.CharField(read_only=True)


class IPv4AddressSerializer(serializers.ModelSerializer):
    project = ProjectField(required=False)
    nic = ScopedRelatedField(nics_visible_to, required=False, allow_null=True)
    vm = serializers.SerializerMethodField()
    nat64_prefix = serializers.CharField(source="pool.nat64_prefix", read_only=True)

    class Meta:
        model = IPv4Address
        fields = ["uuid", "address", "project", "nic", "vm", "status", "status_message", "nat64_prefix", "created"]
        read_only_fields = ["uuid", "address", "status", "status_message", "created"]

    def get_vm(self, address) -> str | None:
        return str(address.nic.vm.uuid) if address.nic_id else None


class IPv4MapSerializer(serializers.Serializer):
    nic = ScopedRelatedField(nics_visible_to, allow_null=True,
                             help_text="The NIC to map the address to; null unmaps it.")
