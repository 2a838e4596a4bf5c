from django.contrib import admin, messages
from django.db import transaction

from networks.actions import do_create_network, do_create_public_network
from networks.models import NIC, Firewall, IPv4Address, IPv4Pool, Network, PrefixPool
from networks.workflows import request_nat64_sync


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
    list_display = ["mac", "ipv6_address", "vm", "network", "index", "status"]
    search_fields = ["mac", "ipv6_address", "uuid", "vm__name"]
    list_filter = ["network__is_public", "status"]
    readonly_fields = ["uuid", "mac", "ipv6_address", "created"]


@admin.register(IPv4Pool)
class IPv4PoolAdmin(admin.ModelAdmin):
    list_display = ["prefix", "nat64_host", "nat64_prefix", "translator_address", "is_active"]
    list_filter = ["is_active", "nat64_host"]
    actions = ["sync_translator"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        transaction.on_commit(lambda: request_nat64_sync(obj))

    @admin.action(description="Send the maps to the NAT64 host again")
    def sync_translator(self, request, queryset):
        for pool in queryset:
            request_nat64_sync(pool)
        messages.info(request, f"Queued a sync for {queryset.count()} pool(s).")


@admin.register(IPv4Address)
class IPv4AddressAdmin(admin.ModelAdmin):
    list_display = ["address", "project", "nic", "status", "pool"]
    list_filter = ["status", "pool"]
    search_fields = ["address", "project__name", "nic__vm__name", "nic__ipv6_address"]
    readonly_fields = ["uuid", "address", "project", "nic", "pool", "status", "status_message", "created"]

    def has_add_permission(self, request):
        return False  # addresses are allocated through do_allocate_ipv4 (quota, order, audit)


@admin.register(Firewall)
class FirewallAdmin(admin.ModelAdmin):
    list_display = ["vm", "version", "applied_version", "error"]
    search_fields = ["vm__name", "vm__uuid"]
    readonly_fields = ["vm", "version", "applied_version", "error", "updated"]
