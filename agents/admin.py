from django.contrib import admin, messages

from agents.hosts import do_check_host
from agents.models import Host, Operation


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["name", "transport", "ssh_address", "status", "cores", "memory_mib", "last_heartbeat"]
    list_filter = ["status", "transport"]
    search_fields = ["name", "ssh_address"]
    readonly_fields = ["uuid", "last_heartbeat", "last_error", "facts", "created"]
    actions = ["check_hosts"]

    @admin.action(description="Check the selected hosts now")
    def check_hosts(self, request, queryset):
        for host in queryset:
            do_check_host(request.user, host)
        messages.info(request, f"Started a check of {queryset.count()} host(s).")


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    list_display = ["created", "kind", "target_kind", "target_uuid", "state", "step", "attempts", "host"]
    list_filter = ["state", "kind"]
    search_fields = ["uuid", "target_uuid", "error"]
    readonly_fields = [f.name for f in Operation._meta.fields]

    def has_add_permission(self, request):
        return False
