from rest_framework import serializers

from accounts.api.mixins import ProjectField
from networks.addressing import multicast_group
from networks.models import NIC, Network


class NetworkSerializer(serializers.ModelSerializer):
    project = ProjectField(required=False)
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

    class Meta:
        model = NIC
        fields = ["uuid", "vm", "network", "index", "mac", "ipv6_address", "created"]
        read_only_fields = fields
