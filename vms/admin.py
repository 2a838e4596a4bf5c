from django.contrib import admin, messages
from django.utils.html import format_html_join

from accounts.adminactions import run_action_on_each
from agents.admin import HostAdmin
from agents.models import Host, Operation
from vms import actions
from vms.drain import DRAIN, do_drain_host
from vms.migration import FIGURES, MIGRATE
from vms.models import VM, SSHKey


@admin.register(VM)
class VMAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "status", "desired_state", "cores", "memory_mib", "host", "created"]
    list_filter = ["status", "desired_state", "host"]
    search_fields = ["name", "uuid", "nics__ipv6_address", "nics__mac", "project__name", "project__owner__username"]
    """Read-only: a VM changes through its actions (the same do_* functions as the API), so every
    change has its operation, its audit row and its order; a staff edit of cores or host could not."""

    actions = ["start_vms", "stop_vms", "reboot_vms", "suspend_vms", "resume_vms", "delete_vms", "migrate_vms",
               "rebuild_elsewhere"]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in VM._meta.get_fields() if field.concrete] + ["last_migration"]

    def has_add_permission(self, request):
        return False  # VMs are ordered through the API or the portal, with quota and billing

    def has_delete_permission(self, request, obj=None):
        return False  # the "Delete" action below goes through do_delete_vm

    @admin.action(description="Rebuild the selected VMs of a fenced host on another host (their disks' data is lost)")
    def rebuild_elsewhere(self, request, queryset):
        run_action_on_each(request, queryset, actions.do_rebuild_vm_elsewhere, "Rebuild elsewhere started")

    @admin.display(description="Last move (live migration)")
    def last_migration(self, vm):
        migration = Operation.objects.filter(kind=MIGRATE, target_uuid=vm.uuid).order_by("-created").first()
        if migration is None:
            return "never moved"
        figures = [(key, migration.result[key]) for key in FIGURES if migration.result.get(key) is not None]
        return format_html_join("", "<div>{}: {}</div>", [("state", migration.state), *figures,
                                                          ("error", migration.error or "-")])

    @admin.action(description="Move the selected running VMs to another host (live; the scheduler picks it)")
    def migrate_vms(self, request, queryset):
        run_action_on_each(request, queryset, actions.do_migrate_vm, "Move started")

    @admin.action(description="Start the selected VMs")
    def start_vms(self, request, queryset):
        run_action_on_each(request, queryset, actions.do_start_vm, "Start requested")

    @admin.action(description="Stop the selected VMs")
    def stop_vms(self, request, queryset):
        run_action_on_each(request, queryset, actions.do_stop_vm, "Stop requested")

    @admin.action(description="Reboot the selected VMs")
    def reboot_vms(self, request, queryset):
        run_action_on_each(request, queryset, actions.do_reboot_vm, "Reboot requested")

    @admin.action(description="Suspend the selected VMs (stopped until staff resume them)")
    def suspend_vms(self, request, queryset):
        run_action_on_each(request, queryset, lambda actor, vm: actions.do_suspend_vm(actor, vm, "Suspended by staff."),
                           "Suspended")

    @admin.action(description="Resume the selected suspended VMs")
    def resume_vms(self, request, queryset):
        run_action_on_each(request, queryset, actions.do_resume_vm, "Resumed")

    @admin.action(description="Delete the selected VMs")
    def delete_vms(self, request, queryset):
        run_action_on_each(request, queryset, actions.do_delete_vm, "Deletion requested")


@admin.register(SSHKey)
class SSHKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "key_type", "fingerprint", "created"]
    search_fields = ["name", "fingerprint"]
    readonly_fields = ["uuid", "key_type", "fingerprint", "created"]


class HostWithVMsAdmin(HostAdmin):
    """The host admin plus what needs the VMs: maintenance (a drain) and its progress."""

    actions = [*HostAdmin.actions, "maintenance"]
    readonly_fields = [*HostAdmin.readonly_fields, "drain_progress"]

    @admin.action(description="Put the selected hosts into maintenance (move their VMs away, then empty)")
    def maintenance(self, request, queryset):
        for host in queryset:
            try:
                do_drain_host(request.user, host)
            except Exception as error:  # one host's refusal must not hide the others'
                messages.error(request, f"{host.name}: {getattr(error, 'detail', error)}")
        messages.info(request, "Drains started; progress is on each host's page.")

    @admin.display(description="Drain (maintenance)")
    def drain_progress(self, host):
        drain = Operation.objects.filter(kind=DRAIN, target_uuid=host.uuid).order_by("-created").first()
        if drain is None:
            return "never drained"
        result = drain.result
        rows = [("state", f"{drain.get_state_display()} ({drain.step})"), ("VMs left", result.get("remaining", "?")),
                ("moving now", result.get("moving", 0)), ("moved", result.get("moved", 0))]
        rows += [("cannot move", reason) for reason in (result.get("cannot_move") or {}).values()]
        if drain.error:
            rows.append(("note", drain.error))
        return format_html_join("", "<div>{}: {}</div>", rows)


admin.site.unregister(Host)
admin.site.register(Host, HostWithVMsAdmin)
