from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response

from accounts.api.pagination import KeysFirstPagination
from accounts.errors import Conflict
from accounts.scoping import scoped
from agents import actions as host_actions
from agents.api.serializers import HostSerializer, OperationSerializer
from agents.choices import HostStatus
from agents.hosts import do_check_host
from agents.models import Host, Operation


class HostViewSet(viewsets.ModelViewSet):
    """Hypervisors: staff only."""

    queryset = Host.objects.all()
    serializer_class = HostSerializer
    permission_classes = [IsAdminUser]
    lookup_field = "uuid"
    filterset_fields = ["status", "transport"]

    # Status changes go through agents/actions.py (audit row, conditional UPDATE, waking waiting VMs);
    # `maintenance` is reached only by a drain (POST hosts/<uuid>/maintenance/), `down` by the reconciler.
    STATUS_ACTIONS = {
        HostStatus.ENABLED: host_actions.do_enable_host,
        HostStatus.DRAINING: host_actions.do_mark_host_draining,
        HostStatus.DOWN: host_actions.do_disable_host,
    }

    @transaction.atomic  # a refused status change keeps the other fields of the request unsaved too
    def perform_update(self, serializer):
        wanted = serializer.validated_data.pop("status", None)
        host = serializer.save()
        if wanted is None or wanted == host.status:
            return
        change = self.STATUS_ACTIONS.get(wanted)
        if change is None:
            raise Conflict(f"A host becomes '{wanted}' only through its workflow "
                           "(maintenance: POST /api/v1/hosts/<uuid>/maintenance/).")
        if not change(self.request.user, host):
            raise Conflict(f"A host that is '{host.status}' cannot become '{wanted}'.")

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
    pagination_class = KeysFirstPagination  # one or more for every VM ever made: the longest list

    def get_queryset(self):
        queryset = Operation.objects.select_related("project")
        if self.request.user.is_staff and self.request.query_params.get("all") == "1":
            return queryset
        return scoped(queryset, self.request.user)
