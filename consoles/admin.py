from django.contrib import admin

from consoles.models import ConsoleSession


@admin.register(ConsoleSession)
class ConsoleSessionAdmin(admin.ModelAdmin):
    """The console audit: read-only, like every state the system writes."""

    list_display = ["started", "user", "vm_name", "kind", "client_address", "ended", "end_reason",
                    "bytes_to_client", "bytes_from_client"]
    list_filter = ["kind", "end_reason"]
    search_fields = ["vm_name", "vm_uuid", "user__username", "client_address"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
