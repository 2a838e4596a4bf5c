from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from accounts.api.pagination import KeysFirstPagination
from accounts.api.parsers import BoundedJSONParser
from accounts.scoping import default_project, scoped
from agents.api.serializers import OperationSerializer
from images import actions
from images.api.serializers import (
    DiskCreateSerializer,
    DiskExtendSerializer,
    DiskSerializer,
    ImageSerializer,
    ImageUpdateSerializer,
    ImageUploadSerializer,
    NameSerializer,
    SnapshotSerializer,
)
from images.models import Disk, Snapshot
from images.uploads import ImageUploadHandler
from images.visibility import images_visible_to


class ImageViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin,
                   mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Public images and your own. POST uploads one (multipart: `file`, `name`, `format`...):
    the answer is 202 with the image in `validating`; poll it until `available` or `rejected`
    (then `error` says why)."""

    lookup_field = "uuid"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    filterset_fields = ["name", "status"]
    parser_classes = [MultiPartParser, FormParser, BoundedJSONParser]

    def initialize_request(self, request, *args, **kwargs):
        # Before anything reads the body: stream the file to our upload directory, never to memory.
        if request.method == "POST":
            request.upload_handlers = [ImageUploadHandler(request)]
        return super().initialize_request(request, *args, **kwargs)

    def get_queryset(self):
        queryset = images_visible_to(self.request.user).select_related("project")
        if self.action in ("partial_update", "destroy") and not self.request.user.is_staff:
            queryset = queryset.filter(project__isnull=False)  # public images are staff's
        return queryset

    def get_serializer_class(self):
        if self.action == "create":
            return ImageUploadSerializer
        if self.action == "partial_update":
            return ImageUpdateSerializer
        return ImageSerializer

    @extend_schema(request={"multipart/form-data": ImageUploadSerializer}, responses={202: ImageSerializer})
    def create(self, request, *args, **kwargs):
        handler = request._request.upload_handlers[0]
        try:
            body = request.data
        except OSError:
            # The client went away mid-upload (a TCP reset reads as ConnectionResetError): nothing
            # of it is kept, at once, and the answer is a 400 (the client may not be there to read it).
            handler.discard_partial()
            raise ValidationError({"file": "The upload was cut off before the end; send the whole file again."})
        except Exception:
            handler.discard_partial()
            raise
        serializer = self.get_serializer(data=body)
        uploaded = body.get("file") if hasattr(body, "get") else None
        try:
            if handler.too_large:
                raise ValidationError({"file": f"The file is larger than the limit of "
                                               f"{handler.max_bytes // 1024**3} GiB."})
            serializer.is_valid(raise_exception=True)
            data = serializer.validated_data
            project = None if data["public"] else (data.get("project") or default_project(request.user))
            if project is None and not data["public"]:
                raise ValidationError({"project": "You have no project; create one first."})
        except Exception:
            if hasattr(uploaded, "discard"):
                uploaded.discard()
            raise
        image = actions.do_upload_image(request.user, project, name=data["name"], description=data["description"],
                                        source_format=data["format"], uploaded=data["file"])
        return Response(ImageSerializer(image).data, status=status.HTTP_202_ACCEPTED)

    def perform_update(self, serializer):
        serializer.instance = actions.do_update_image(self.request.user, serializer.instance,
                                                      **serializer.validated_data)

    def update(self, request, *args, **kwargs):
        super().update(request, *args, **kwargs)
        return Response(ImageSerializer(self.get_object()).data)

    def perform_destroy(self, instance):
        actions.do_delete_image(self.request.user, instance)


def disk_and_operation(disk, operation):
    """200 with the disk when it is done; 202 with the disk and its operation when a running VM's
    guest still has to take the disk or let it go."""
    body = DiskSerializer(disk).data
    if operation is None:
        return Response(body)
    body["operation"] = OperationSerializer(operation).data
    return Response(body, status=status.HTTP_202_ACCEPTED)


class DiskViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                  mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Root disks of your VMs and your data volumes: create, detach, extend, snapshot (attach:
    vms/api/disks.py, a disk joins a VM)."""

    lookup_field = "uuid"
    filterset_fields = ["role", "status"]
    pagination_class = KeysFirstPagination  # every VM has a root disk: as many as VMs

    def get_queryset(self):
        return scoped(Disk.objects.select_related("project", "vm", "image", "host"), self.request.user)

    def get_serializer_class(self):
        return {"create": DiskCreateSerializer, "extend": DiskExtendSerializer,
                "snapshot": NameSerializer}.get(self.action, DiskSerializer)

    def _input(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    @extend_schema(request=DiskCreateSerializer, responses={201: DiskSerializer})
    def create(self, request, *args, **kwargs):
        data = self._input(request)
        project = data.get("project") or default_project(request.user)
        if project is None:
            raise ValidationError({"project": "You have no project; create one first."})
        disk = actions.do_create_disk(request.user, project, name=data["name"], size_mib=data["size"],
                                      storage=data["storage"])
        return Response(DiskSerializer(disk).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        operation = actions.do_delete_disk(request.user, self.get_object())
        if operation is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(OperationSerializer(operation).data, status=status.HTTP_202_ACCEPTED)

    def _disk_and_operation(self, disk, operation):
        return disk_and_operation(disk, operation)

    @extend_schema(request=None, responses={200: DiskSerializer, 202: DiskSerializer})
    @action(detail=True, methods=["post"])
    def detach(self, request, uuid=None):
        return self._disk_and_operation(*actions.do_detach_disk(request.user, self.get_object()))

    @extend_schema(request=DiskExtendSerializer, responses={200: DiskSerializer})
    @action(detail=True, methods=["post"])
    def extend(self, request, uuid=None):
        disk, operation = actions.do_extend_disk(request.user, self.get_object(), self._input(request)["size"])
        body = DiskSerializer(disk).data
        if operation is not None:
            body["operation"] = OperationSerializer(operation).data
        return Response(body, status=status.HTTP_202_ACCEPTED if operation else status.HTTP_200_OK)

    @extend_schema(request=NameSerializer, responses={202: SnapshotSerializer})
    @action(detail=True, methods=["post"])
    def snapshot(self, request, uuid=None):
        snapshot = actions.do_snapshot_disk(request.user, self.get_object(), self._input(request)["name"])
        return Response(SnapshotSerializer(snapshot).data, status=status.HTTP_202_ACCEPTED)


class SnapshotViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                      viewsets.GenericViewSet):
    """Snapshots of your disks; POST .../image/ {name} makes an image of one."""

    lookup_field = "uuid"
    filterset_fields = ["status"]

    def get_queryset(self):
        return scoped(Snapshot.objects.select_related("project", "disk"), self.request.user)

    def get_serializer_class(self):
        return NameSerializer if self.action == "image" else SnapshotSerializer

    def destroy(self, request, *args, **kwargs):
        operation = actions.do_delete_snapshot(request.user, self.get_object())
        if operation is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(OperationSerializer(operation).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=NameSerializer, responses={202: ImageSerializer})
    @action(detail=True, methods=["post"])
    def image(self, request, uuid=None):
        snapshot = self.get_object()
        serializer = NameSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        image = actions.do_image_from_snapshot(request.user, snapshot, serializer.validated_data["name"])
        return Response(ImageSerializer(image).data, status=status.HTTP_202_ACCEPTED)


