from rest_framework import serializers

from accounts.api.mixins import ProjectField
from networks.addressing import multicast_group
from networks.models import Network


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
