"""Attaching a data volume to a VM: POST /api/v1/disks/<uuid>/attach/ {"vm": ...}. It lives with
the VMs because it names one (images/ below knows disks, not VMs)."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.views import APIView

from accounts.api.mixins import ScopedRelatedField
from accounts.scoping import scoped
from images import actions
from images.api.serializers import DiskSerializer
from images.api.views import disk_and_operation
from images.models import Disk
from vms.choices import DesiredState
from vms.models import VM


def vms_visible_to(user):
    return scoped(VM.objects.exclude(desired_state=DesiredState.DELETED), user)


class DiskAttachSerializer(serializers.Serializer):
    vm = ScopedRelatedField(vms_visible_to)


class DiskAttachView(APIView):
    """Attach a data volume to a VM (hot-plugged when it runs)."""

    @extend_schema(request=DiskAttachSerializer, responses={200: DiskSerializer, 202: DiskSerializer},
                   operation_id="disks_attach_create", tags=["disks"])
    def post(self, request, uuid):
        disk = get_object_or_404(scoped(Disk.objects.select_related("project", "vm", "image", "host"), request.user),
                                 uuid=uuid)
        serializer = DiskAttachSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        return disk_and_operation(*actions.do_attach_disk(request.user, disk, serializer.validated_data["vm"]))
