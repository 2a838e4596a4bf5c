from django.db import connection
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.fields import SizeField
from accounts.api.mixins import ProjectScopedViewSet, ScopedRelatedField
from accounts.scoping import default_project, scoped
from agents.api.serializers import OperationSerializer
from agents.models import Host
from images.visibility import images_visible_to
from networks.models import NIC
from vms import actions
from vms.api.listing import VMListPagination
from vms.api.serializers import (
    SSHKeySerializer,
    SSHKeyUpdateSerializer,
    VMCreateSerializer,
    VMSerializer,
    VMUpdateSerializer,
)
from vms.choices import DesiredState, VMStatus
from vms.drain import do_drain_host
from vms.models import MIN_MEMORY_MIB, VM, SSHKey


class StopSerializer(serializers.Serializer):
    hard = serializers.BooleanField(default=False, help_text="Skip the ACPI powerdown and stop at once.")


class RebuildSerializer(serializers.Serializer):
    image = ScopedRelatedField(images_visible_to, help_text="UUID of the image the root disk is made from again.")


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


ERROR = ErrorSerializer


class MigrateSerializer(serializers.Serializer):
    host = serializers.SlugRelatedField(slug_field="name", queryset=Host.objects.all(), required=False, allow_null=True,
                                        help_text="Name of the destination host; the scheduler picks one if absent.")
    live = serializers.BooleanField(default=True, help_text="Move the running VM without stopping it.")
    bandwidth_mib = serializers.IntegerField(required=False, min_value=1, max_value=1024 * 1024,
                                             help_text="Bandwidth limit of this move in MiB/s (default: the "
                                             "UNCLOUD_MIGRATION_BANDWIDTH_MIB setting).")


class ResizeSerializer(serializers.Serializer):
    cores = serializers.IntegerField(min_value=1, max_value=256, required=False)
    memory = SizeField(min_value=MIN_MEMORY_MIB, max_value=4 * 1024 * 1024, required=False,
                       help_text='e.g. "4GiB" or 4096 (MiB)')
    disk = SizeField(min_value=1024, max_value=64 * 1024 * 1024, required=False,
                     help_text='root disk, only larger: e.g. "40G"')


class VMActionResultSerializer(serializers.Serializer):
    vm = VMSerializer()
    operation = OperationSerializer(allow_null=True)


class SSHKeyViewSet(ProjectScopedViewSet):
    model = SSHKey
    serializer_class = SSHKeySerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    filterset_fields = ["name", "fingerprint"]

    def get_serializer_class(self):
        return SSHKeyUpdateSerializer if self.action == "partial_update" else SSHKeySerializer

    def perform_create(self, serializer):
        data = serializer.validated_data
        project = data.get("project") or default_project(self.request.user)
        serializer.instance = actions.do_add_ssh_key(self.request.user, project, data["name"], data["public_key"])

    def perform_destroy(self, instance):
        actions.do_delete_ssh_key(self.request.user, instance)


class VMViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    serializer_class = VMSerializer
    pagination_class = VMListPagination  # a project may hold 10,000 VMs
    lookup_field = "uuid"
    filterset_fields = ["status", "desired_state", "name"]

    def get_queryset(self):
        vms = scoped(VM.objects.all(), self.request.user).select_related("project", "image", "host")
        if self.action == "list" and self.request.query_params.get("status") != VMStatus.DELETED:
            vms = vms.exclude(status=VMStatus.DELETED)
        return vms.prefetch_related("ssh_keys", Prefetch("nics", NIC.objects.select_related("network"), to_attr="listed_nics"),
                                    Prefetch("disks", to_attr="listed_disks"))

    def list(self, request):
        if connection.vendor != "postgresql":
            return super().list(request)  # the embedded default (SQLite) has no arrays: the serializer path
        # Rows straight from one SQL statement (vms/api/listing.py), not VMSerializer: the same answer.
        return self.paginator.get_paginated_response(
            self.paginator.paginate_vms(self.filter_queryset(self.get_queryset()), request))

    def _accepted(self, vm, operation):
        vm = VM.objects.select_related("project", "image", "host").get(pk=vm.pk) if vm is not None else None
        body = {"vm": VMSerializer(vm).data if vm is not None else None,
                "operation": OperationSerializer(operation).data if operation is not None else None}
        return Response(body, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: VMActionResultSerializer})
    @action(detail=True, methods=["post"])
    def start(self, request, uuid=None):
        vm = self.get_object()
        return self._accepted(vm, actions.do_start_vm(request.user, vm))

    @extend_schema(request=StopSerializer, responses={202: VMActionResultSerializer})
    @action(detail=True, methods=["post"])
    def stop(self, request, uuid=None):
        vm = self.get_object()
        serializer = StopSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self._accepted(vm, actions.do_stop_vm(request.user, vm, hard=serializer.validated_data["hard"]))

    @extend_schema(request=None, responses={202: VMActionResultSerializer})
    @action(detail=True, methods=["post"])
    def reboot(self, request, uuid=None):
        vm = self.get_object()
        return self._accepted(vm, actions.do_reboot_vm(request.user, vm))

    @extend_schema(request=RebuildSerializer, responses={202: VMActionResultSerializer})
    @action(detail=True, methods=["post"])
    def rebuild(self, request, uuid=None):
        """Stop the VM hard, make its root disk again from the image, start it again (a stopped VM
        stays stopped). The root disk's content is lost; NICs, addresses and data volumes stay."""
        vm = self.get_object()
        serializer = RebuildSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        return self._accepted(vm, actions.do_rebuild_vm(request.user, vm, serializer.validated_data["image"]))

    @extend_schema(request=ResizeSerializer, responses={202: VMActionResultSerializer, 400: ERROR, 404: ERROR,
                                                        409: ERROR})
    @action(detail=True, methods=["post"])
    def resize(self, request, uuid=None):
        """New cores, memory or a larger root disk. The quota is checked and the VM's order replaced
        (billing, prorated). A running VM with new cores or memory is stopped and started again; a
        disk that only grows grows online; a stopped VM takes the size at its next start."""
        vm = self.get_object()
        serializer = ResizeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        return self._accepted(vm, actions.do_resize_vm(request.user, vm, cores=data.get("cores"),
                                                       memory_mib=data.get("memory"), disk_mib=data.get("disk")))

    @extend_schema(request=MigrateSerializer, responses={202: VMActionResultSerializer, 400: ERROR, 403: ERROR, 404: ERROR,
                                                         409: ERROR})
    @action(detail=True, methods=["post"], permission_classes=[IsAdminUser])
    def migrate(self, request, uuid=None):
        """Staff only: move the running VM to another host while it runs (live migration). The
        operation's `figures` report QEMU's downtime, total time and the bytes sent."""
        vm = get_object_or_404(VM.objects.exclude(status=VMStatus.DELETED), uuid=uuid)  # staff: any project
        serializer = MigrateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        return self._accepted(vm, actions.do_migrate_vm(request.user, vm, destination=data.get("host"),
                                                        live=data["live"], bandwidth_mib=data.get("bandwidth_mib")))

    @extend_schema(responses={202: VMActionResultSerializer})
    def destroy(self, request, uuid=None):
        vm = self.get_object()
        return self._accepted(vm, actions.do_delete_vm(request.user, vm))

    @extend_schema(
        request=VMCreateSerializer,
        responses={201: VMSerializer, 200: VMSerializer,
                   422: OpenApiResponse(ERROR, description="The Idempotency-Key was already used with another request.")},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
                                     description="Repeat a create safely: the same key with the same request returns "
                                                 "the same VM (200); with a different request it is refused (422).")],
    )
    def create(self, request):
        serializer = VMCreateSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        idempotency_key = request.headers.get("Idempotency-Key", "").strip()[:200] or None
        vm, created = actions.do_create_vm(
            request.user, data["project"], name=data["name"], cores=data["cores"], memory_mib=data["memory"],
            disk_mib=data["disk"], image=data.get("image"), networks=data.get("networks"),
            ssh_keys=data.get("ssh_keys", []), user_data=data.get("user_data", ""), idempotency_key=idempotency_key,
            start=data["desired_state"] == DesiredState.RUNNING,
        )
        if created:
            # As just written, without reading it back (four queries, an eighth of the POST): its lists
            # are the rows the create made, its keys as the VM's ssh_keys manager would order them.
            keys = SSHKey.objects.filter(pk__in=[key.pk for key in vm.created_with_keys])
            keys._result_cache, keys._prefetch_done = vm.created_with_keys, True
            vm._prefetched_objects_cache = {"ssh_keys": keys}
        else:  # a replay: the VM as it is now
            vm = self.get_queryset().get(pk=vm.pk)
        return Response(VMSerializer(vm).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(request=VMUpdateSerializer, responses=VMSerializer)
    def partial_update(self, request, uuid=None):
        vm = self.get_object()
        serializer = VMUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        actions.do_rename_vm(request.user, vm, serializer.validated_data["name"])
        return Response(VMSerializer(self.get_queryset().get(pk=vm.pk)).data)


class HostMaintenanceView(APIView):
    """Staff only: put a host into maintenance. Its running VMs move away (live, concurrency-
    limited); empty, it is `maintenance`. PATCH /api/v1/hosts/<uuid>/ {"status": "enabled"}
    brings it back. Repeating the call returns the drain under way."""

    permission_classes = [IsAdminUser]

    @extend_schema(request=None, responses={202: OperationSerializer, 403: ERROR, 404: ERROR, 409: ERROR})
    def post(self, request, uuid):
        host = get_object_or_404(Host, uuid=uuid)
        operation = do_drain_host(request.user, host)
        return Response(OperationSerializer(operation).data, status=status.HTTP_202_ACCEPTED)
