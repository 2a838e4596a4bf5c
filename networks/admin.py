from django.contrib import admin, messages

from networks.actions import do_create_network, do_create_public_network
from networks.models import NIC, Network, PrefixPool


@admin.register(PrefixPool)
class PrefixPoolAdmin(admin.ModelAdmin):
    list_display = ["prefix", "description", "is_active"]


@admin.register(Network)
class NetworkAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "vni", "prefix", "is_public", "status"]
    list_filter = ["is_public", "status"]
    search_fields = ["name", "prefix", "uuid", "project__name", "project__owner__username"]
    readonly_fields = ["uuid", "vni", "prefix", "pool", "created"]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        # New networks get their VNI and /64 from the allocator, never typed by hand.
        if obj.project is None:
            created = do_create_public_network(request.user, obj.name)
        else:
            created = do_create_network(request.user, obj.project, obj.name)
        obj.pk, obj.vni, obj.prefix = created.pk, created.vni, created.prefix
        messages.info(request, f"Allocated VNI {created.vni} and {created.prefix}.")

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj else ["uuid", "vni", "prefix", "pool", "created", "status"]

    def get_exclude(self, request, obj=None):
        return [] if obj else ["vni", "prefix", "pool"]


@admin.register(NIC)
class NICAdmin(admin.ModelAdmin):
    list_display = ["mac", "ipv6_address", "vm", "network", "index"]
    search_fields = ["mac", "ipv6_address", "uuid", "vm__name"]
    list_filter = ["network__is_public"]
    readonly_fields = ["uuid", "mac", "ipv6_address", "created"]
