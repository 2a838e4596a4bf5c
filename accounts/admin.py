from django.contrib import admin

from accounts.models import APIToken, AuditEntry, Membership, Project


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "uuid", "created"]
    search_fields = ["name", "owner__username", "uuid"]
    inlines = [MembershipInline]
    readonly_fields = ["uuid", "created"]


@admin.register(APIToken)
class APITokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "key_prefix", "created", "last_used", "expires", "revoked"]
    search_fields = ["name", "user__username", "key_prefix"]
    readonly_fields = ["uuid", "key_prefix", "created", "last_used"]
    exclude = ["key_hash"]

    def has_add_permission(self, request):
        return False  # tokens are made through the API/portal so the raw key is shown once


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["created", "actor", "project", "action", "target_kind", "target_uuid"]
    list_filter = ["action", "target_kind"]
    search_fields = ["actor__username", "target_uuid", "action"]
    readonly_fields = [f.name for f in AuditEntry._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
