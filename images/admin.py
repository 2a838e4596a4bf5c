from django.contrib import admin

from accounts.adminactions import run_action_on_each
from images import actions
from images.models import Disk, Image


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    """State (status, format, sizes, storage, owner, files) is read-only: it is what the import
    workflow found. Name and description are edited through do_update_image (audited)."""

    list_display = ["name", "project", "status", "format", "virtual_size_bytes", "storage", "created"]
    list_filter = ["status", "storage"]
    search_fields = ["name", "uuid", "checksum_sha256"]
    editable = ("name", "description")
    actions = ["delete_images"]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Image._meta.get_fields() if field.concrete and field.name not in self.editable]

    def has_add_permission(self, request):
        return False  # images are uploaded (API, portal) or published by `manage.py bootstrap`

    def has_delete_permission(self, request, obj=None):
        return False  # the "Delete" action below goes through do_delete_image

    def save_model(self, request, obj, form, change):
        changes = {name: form.cleaned_data[name] for name in form.changed_data if name in self.editable}
        if changes:
            actions.do_update_image(request.user, Image.objects.get(pk=obj.pk), **changes)

    @admin.action(description="Delete the selected images")
    def delete_images(self, request, queryset):
        run_action_on_each(request, queryset, actions.do_delete_image, "Deleted")


@admin.register(Disk)
class DiskAdmin(admin.ModelAdmin):
    """Read-only: sizes, attachment and place change through the disk actions (audited, with the
    operation that makes the host follow)."""

    list_display = ["name", "project", "vm", "role", "size_mib", "status", "storage"]
    list_filter = ["role", "status", "storage"]
    search_fields = ["name", "uuid"]
    actions = ["detach_disks", "delete_disks"]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Disk._meta.get_fields() if field.concrete]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Detach the selected disks from their VMs")
    def detach_disks(self, request, queryset):
        run_action_on_each(request, queryset, actions.do_detach_disk, "Detach requested")

    @admin.action(description="Delete the selected disks")
    def delete_disks(self, request, queryset):
        run_action_on_each(request, queryset, actions.do_delete_disk, "Deletion requested")
