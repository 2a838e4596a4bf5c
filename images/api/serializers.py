from rest_framework import serializers

from images.models import Disk, Image


class ImageSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="uuid", read_only=True)
    is_public = serializers.BooleanField(read_only=True)

    class Meta:
        model = Image
        fields = [
            "uuid", "project", "is_public", "name", "description", "format", "status", "virtual_size_bytes",
            "file_size_bytes", "checksum_sha256", "error", "created",
        ]
        read_only_fields = [f for f in fields if f not in ("name", "description")]


class DiskSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="uuid", read_only=True)
    vm = serializers.SlugRelatedField(slug_field="uuid", read_only=True)
    image = serializers.SlugRelatedField(slug_field="uuid", read_only=True)

    class Meta:
        model = Disk
        fields = ["uuid", "project", "name", "vm", "role", "image", "size_mib", "status", "created"]
        read_only_fields = fields
