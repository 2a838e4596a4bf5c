from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response

from accounts.scoping import scoped
from agents.api.serializers import HostSerializer, OperationSerializer
from agents.hosts import do_check_host
from agents.models import Host, Operation


class HostViewSet(viewsets.ModelViewSet):
    """Hypervisors: staff only."""

    queryset = Host.objects.all()
    serializer_class = HostSerializer
    permission_classes = [IsAdminUser]
    lookup_field = "uuid"
    filterset_fields = ["status", "transport"]

    @extend_schema(request=None, responses={202: OperationSerializer})
    @action(detail=True, methods=["post"])
    def check(self, request, uuid=None):
        operation = do_check_host(request.user, self.get_object())
        return Response(OperationSerializer(operation).data, status=status.HTTP_202_ACCEPTED)


class OperationViewSet(viewsets.ReadOnlyModelViewSet):
    """Long-running work on your resources: progress, and the error text when something failed."""

    serializer_class = OperationSerializer
    lookup_field = "uuid"
    filterset_fields = ["state", "kind", "target_uuid"]

    def get_queryset(self):
        queryset = Operation.objects.select_related("project")
        if self.request.user.is_staff and self.request.query_params.get("all") == "1":
            return queryset
        return scoped(queryset, self.request.user)
