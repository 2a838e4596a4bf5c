from django.contrib import admin, messages

from consoles.actions import do_end_console_session
from consoles.choices import SessionEnd
from consoles.models import ConsoleSession


@admin.register(ConsoleSession)
class ConsoleSessionAdmin(admin.ModelAdmin):
    """The console audit: read-only, like every state the system writes."""

    list_display = ["started", "user", "vm_name", "kind", "client_address", "ended", "end_reason",
                    "bytes_to_client", "bytes_from_client"]
    list_filter = ["kind", "end_reason"]
    search_fields = ["vm_name", "vm_uuid", "user__username", "client_address"]
    actions = ["end_sessions"]

    @admin.action(description="End the selected open sessions (the gateway closes them within seconds)")
    def end_sessions(self, request, queryset):
        ended = sum(do_end_console_session(session.pk, SessionEnd.STAFF_ENDED, actor=request.user)
                    for session in queryset.filter(ended__isnull=True))
        self.message_user(request, f"Ended {ended} console sessions.", messages.SUCCESS)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
