from rest_framework import serializers

from accounts.api.fields import SizeField
from accounts.api.mixins import ProjectField
from images.choices import StorageBackend, UploadFormat
from images.models import Disk, Image, Snapshot

MAX_DISK_MIB = 64 * 1024 * 1024  # 64 TiB, as the host side allows


class ImageSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="uuid", read_only=True, allow_null=True)  # null: public
    is_public = serializers.BooleanField(read_only=True)

    class Meta:
        model = Image
        fields = [
            "uuid", "project", "is_public", "name", "description", "format", "status", "virtual_size_bytes",
            "file_size_bytes", "checksum_sha256", "error", "created",
        ]
        read_only_fields = [f for f in fields if f not in ("name", "description")]


class ImageUpdateSerializer(serializers.ModelSerializer):
    class Meta:
        model = Image
        fields = ["name", "description"]


class ImageUploadSerializer(serializers.Serializer):
    """multipart/form-data: the file plus what it is. Validation runs after the upload."""

    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    format = serializers.ChoiceField(choices=UploadFormat.choices, default=UploadFormat.QCOW2,
                                     help_text="qcow2, or raw (converted to qcow2)")
    file = serializers.FileField(allow_empty_file=False, use_url=False)
    project = ProjectField(required=False)
    public = serializers.BooleanField(default=False, help_text="Publish for everyone (staff only)")

    def validate(self, attrs):
        user = self.context["request"].user
        if attrs["public"] and not user.is_staff:
            raise serializers.ValidationError({"public": "Only staff publish public images."})
        if attrs["public"] and attrs.get("project"):
            raise serializers.ValidationError({"public": "A public image belongs to no project."})
        return attrs


class DiskSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="uuid", read_only=True)
    vm = serializers.SlugRelatedField(slug_field="uuid", read_only=True, allow_null=True)
    image = serializers.SlugRelatedField(slug_field="uuid", read_only=True, allow_null=True)

    class Meta:
        model = Disk
        fields = ["uuid", "project", "name", "vm", "role", "image", "size_mib", "storage", "status", "created"]
        read_only_fields = fields


class DiskCreateSerializer(serializers.Serializer):
    project = ProjectField(required=False)
    name = serializers.CharField(max_length=100)
    size = SizeField(min_value=1, max_value=MAX_DISK_MIB, help_text='e.g. "20G"; a bare number is MiB')
    storage = serializers.ChoiceField(choices=StorageBackend.choices, default=StorageBackend.LOCAL)


class DiskExtendSerializer(serializers.Serializer):
    size = SizeField(min_value=1, max_value=MAX_DISK_MIB, help_text="the new, larger size")


class NameSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)


class SnapshotSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="uuid", read_only=True)
    disk = serializers.SlugRelatedField(slug_field="uuid", read_only=True, allow_null=True)  # null: disk deleted

    class Meta:
        model = Snapshot
        fields = ["uuid", "project", "name", "disk", "status", "storage", "size_bytes", "virtual_size_bytes",
                  "checksum_sha256", "error", "created"]
        read_only_fields = fields
