from django.contrib import admin

from images.models import Disk, Image


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "status", "format", "virtual_size_bytes", "storage", "created"]
    list_filter = ["status", "storage"]
    search_fields = ["name", "uuid", "checksum_sha256"]
    readonly_fields = ["uuid", "created"]


@admin.register(Disk)
class DiskAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "vm", "role", "size_mib", "status", "storage"]
    list_filter = ["role", "status", "storage"]
    search_fields = ["name", "uuid"]
    readonly_fields = ["uuid", "created"]
