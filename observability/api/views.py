from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from observability.api.serializers import RangeSerializer, UsageSerializer
from observability.series import RANGES, vm_usage
from observability.views import visible_vm


class VMMetricsView(APIView):
    """A VM's CPU, network and disk I/O over the last hour or day (rates between the samples kept)."""

    @extend_schema(parameters=[OpenApiParameter("range", enum=list(RANGES), default="1h")],
                   responses={200: UsageSerializer})
    def get(self, request, uuid):
        vm = visible_vm(request.user, uuid)
        query = RangeSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        usage = vm_usage(vm.uuid, query.validated_data["range"])
        return Response(UsageSerializer({"vm": vm.uuid, "range": usage.range, "start": usage.start, "end": usage.end,
                                         "memory_bytes": usage.memory_bytes, "series": usage.series,
                                         "source": usage.source}).data)
