from rest_framework import viewsets

from accounts.scoping import default_project
from networks import actions
from networks.api.serializers import (
    NetworkSerializer,
    NetworkUpdateSerializer,
)
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
        # PATCH sends only what changes: an empty body changes nothing (and is no error).
        if "name" in serializer.validated_data:
            actions.do_rename_network(self.request.user, serializer.instance, serializer.validated_data["name"])

    def perform_destroy(self, instance):
        actions.do_delete_network(self.request.user, instance)
