from django.contrib import admin

from vms.models import VM, SSHKey


@admin.register(VM)
class VMAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "status", "desired_state", "cores", "memory_mib", "host", "created"]
    list_filter = ["status", "desired_state", "host"]
    search_fields = ["name", "uuid", "nics__ipv6_address", "nics__mac"]
    readonly_fields = ["uuid", "created", "updated", "idempotency_key"]


@admin.register(SSHKey)
class SSHKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "key_type", "fingerprint", "created"]
    search_fields = ["name", "fingerprint"]
    readonly_fields = ["uuid", "key_type", "fingerprint", "created"]
