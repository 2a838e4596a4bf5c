from django.contrib import admin, messages

from proxy.models import DomainName, ProxyHost
from proxy.workflows import request_proxy_sync


@admin.register(ProxyHost)
class ProxyHostAdmin(admin.ModelAdmin):
    """Staff designate proxy hosts here; every change re-syncs all of them."""

    list_display = ["host", "public_ipv4", "jump_port", "is_active", "synced_at", "sync_error"]
    readonly_fields = ["synced_at", "sync_error"]
    actions = ["sync_now"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        request_proxy_sync()

    @admin.action(description="Sync the proxy and jump host now")
    def sync_now(self, request, queryset):
        request_proxy_sync()
        messages.info(request, "Sync requested for every proxy host.")


@admin.register(DomainName)
class DomainNameAdmin(admin.ModelAdmin):
    """Read-only: customers own their names; the API's actions change them."""

    list_display = ["name", "project", "vm", "status", "proven_at"]
    list_filter = ["status"]
    search_fields = ["name"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
