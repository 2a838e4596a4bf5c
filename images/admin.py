from django.contrib import admin

from accounts.adminactions import calling
from images import actions as image_actions
from images.models import Disk, Image


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    """State (status, format, sizes, storage, owner, files) is read-only: it is what the import
    workflow found. Name and description are edited through do_update_image (audited)."""

    list_display = ["name", "project", "status", "format", "virtual_size_bytes", "storage", "created"]
    list_filter = ["status", "storage"]
    search_fields = ["name", "uuid", "checksum_sha256"]
    editable = ("name", "description")
    actions = [calling("delete_images", image_actions.do_delete_image, "Delete the selected images", "Deleted")]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Image._meta.get_fields() if field.concrete and field.name not in self.editable]

    def has_add_permission(self, request):
        return False  # images are uploaded (API, portal) or published by `manage.py bootstrap`

    def has_delete_permission(self, request, obj=None):
        return False  # the "Delete" action below goes through do_delete_image

    def save_model(self, request, obj, form, change):
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in self.editable}
        if changes:
            image_actions.do_update_image(request.user, Image.objects.get(pk=obj.pk), **changes)


@admin.register(Disk)
class DiskAdmin(admin.ModelAdmin):
    """Read-only: sizes, attachment and place change through the disk actions (audited, with the
    operation that makes the host follow)."""

    list_display = ["name", "project", "vm", "role", "size_mib", "status", "storage"]
    list_filter = ["role", "status", "storage"]
    search_fields = ["name", "uuid"]
    actions = [
        calling("detach_disks", image_actions.do_detach_disk, "Detach the selected disks from their VMs", "Detach requested"),
        calling("delete_disks", image_actions.do_delete_disk, "Delete the selected disks", "Deletion requested"),
    ]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Disk._meta.get_fields() if field.concrete]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
