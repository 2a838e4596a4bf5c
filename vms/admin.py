from django.contrib import admin, messages

from vms import actions
from vms.models import VM, SSHKey


@admin.register(VM)
class VMAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "status", "desired_state", "cores", "memory_mib", "host", "created"]
    list_filter = ["status", "desired_state", "host"]
    search_fields = ["name", "uuid", "nics__ipv6_address", "nics__mac", "project__name", "project__owner__username"]
    readonly_fields = ["uuid", "created", "updated", "idempotency_key"]
    actions = ["stop_vms"]

    @admin.action(description="Stop the selected VMs")
    def stop_vms(self, request, queryset):
        stop = getattr(actions, "do_stop_vm", None)
        if stop is None:
            messages.error(request, "Stopping VMs needs the VM lifecycle (vms.actions.do_stop_vm).")
            return
        failed = []
        for vm in queryset:
            try:
                stop(request.user, vm)
            except Exception as error:  # one VM's refusal (e.g. already stopping) must not hide the others'
                failed.append(f"{vm.name}: {getattr(error, 'detail', error)}")
        messages.info(request, f"Stop requested for {queryset.count() - len(failed)} VM(s).")
        for line in failed:
            messages.error(request, line)


@admin.register(SSHKey)
class SSHKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "key_type", "fingerprint", "created"]
    search_fields = ["name", "fingerprint"]
    readonly_fields = ["uuid", "key_type", "fingerprint", "created"]
