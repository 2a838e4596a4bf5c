from django.db import transaction
from rest_framework import mixins, viewsets

from accounts import audit
from accounts.scoping import scoped
from images.api.serializers import DiskSerializer, ImageSerializer
from images.models import Disk
from images.visibility import images_visible_to


class ImageViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin,
                   mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Public images and your own. (Uploading your own arrives with the images issue.)"""

    serializer_class = ImageSerializer
    lookup_field = "uuid"
    http_method_names = ["get", "patch", "delete", "head", "options"]
    filterset_fields = ["name", "status"]

    def get_queryset(self):
        queryset = images_visible_to(self.request.user).select_related("project")
        if self.action in ("partial_update", "destroy"):
            queryset = queryset.filter(project__isnull=False)  # public images are staff's
        return queryset

    @transaction.atomic
    def perform_update(self, serializer):
        image = serializer.save()
        audit.record(self.request.user, "image.update", project=image.project, target=image)

    @transaction.atomic
    def perform_destroy(self, instance):
        audit.record(self.request.user, "image.delete", project=instance.project, target=instance)
        instance.delete()  # PROTECT from disks and VMs answers 409 while something still uses it


class DiskViewSet(viewsets.ReadOnlyModelViewSet):
    """Disks of your VMs. (Extra volumes, snapshots and resizing arrive with the images issue.)"""

    serializer_class = DiskSerializer
    lookup_field = "uuid"
    filterset_fields = ["role", "status"]

    def get_queryset(self):
        return scoped(Disk.objects.select_related("project", "vm", "image"), self.request.user)
