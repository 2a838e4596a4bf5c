from rest_framework import viewsets

from accounts.scoping import default_project, scoped
from networks import actions
from networks.api.serializers import NetworkSerializer, NetworkUpdateSerializer, NICSerializer
from networks.models import NIC
from networks.visibility import networks_visible_to


class NetworkViewSet(viewsets.ModelViewSet):
    """Your private networks and the site's public ones (read-only to you)."""

    lookup_field = "uuid"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    filterset_fields = ["name", "is_public", "vni"]

    def get_queryset(self):
        queryset = networks_visible_to(self.request.user).select_related("project")
        if self.action in ("partial_update", "destroy"):
            # Public networks are staff's: customers see them but cannot change them (404 like any stranger's).
            queryset = queryset.filter(project__isnull=False)
        return queryset

    def get_serializer_class(self):
        return NetworkUpdateSerializer if self.action == "partial_update" else NetworkSerializer

    def perform_create(self, serializer):
        project = serializer.validated_data.get("project") or default_project(self.request.user)
        serializer.instance = actions.do_create_network(self.request.user, project, serializer.validated_data["name"])

    def perform_update(self, serializer):
        actions.do_rename_network(self.request.user, serializer.instance, serializer.validated_data["name"])

    def perform_destroy(self, instance):
        actions.do_delete_network(self.request.user, instance)


class NICViewSet(viewsets.ReadOnlyModelViewSet):
    """NICs of your VMs; they are made with the VM (attach/detach arrive with the networks issue)."""

    serializer_class = NICSerializer
    lookup_field = "uuid"
    filterset_fields = ["mac", "ipv6_address"]

    def get_queryset(self):
        return scoped(NIC.objects.select_related("vm", "network"), self.request.user, field="vm__project")
