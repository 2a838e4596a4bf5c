from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.scoping import default_project, scoped
from proxy import actions
from proxy.api.serializers import DomainNameChangeSerializer, DomainNameSerializer
from proxy.models import DomainName


class DomainNameViewSet(viewsets.ModelViewSet):
    """Domain names of your projects' VMs, served to IPv4 visitors by the shared proxy once proven.
    POST {"name", "vm"} claims a name (409 when taken); PATCH {"vm"} or {"proxy_protocol"};
    POST .../verify/ proves it again."""

    serializer_class = DomainNameSerializer
    lookup_field = "uuid"
    lookup_value_regex = "[0-9a-fA-F-]{36}"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    filterset_fields = ["name", "status"]

    def get_queryset(self):
        return scoped(DomainName.objects.select_related("vm", "project"), self.request.user)

    def perform_create(self, serializer):
        data = serializer.validated_data
        project = data.get("project") or default_project(self.request.user)
        if project is None:
            raise serializers.ValidationError({"project": "You have no project; create one first."})
        serializer.instance = actions.do_create_domain(self.request.user, project, data["vm"], data["name"],
                                                       proxy_protocol=data.get("proxy_protocol", False))

    @extend_schema(request=DomainNameChangeSerializer, responses=DomainNameSerializer)
    def partial_update(self, request, uuid=None):
        domain = self.get_object()
        serializer = DomainNameChangeSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
            actions.do_update_domain(request.user, domain, vm=serializer.validated_data.get("vm"),
                                     proxy_protocol=serializer.validated_data.get("proxy_protocol"))
        return Response(self.get_serializer(self.get_queryset().get(pk=domain.pk)).data)

    def perform_destroy(self, instance):
        actions.do_delete_domain(self.request.user, instance)

    @extend_schema(request=None, responses={202: DomainNameSerializer})
    @action(detail=True, methods=["post"])
    def verify(self, request, uuid=None):
        domain = actions.do_verify_domain(request.user, self.get_object())
        return Response(self.get_serializer(domain).data, status=status.HTTP_202_ACCEPTED)
