from django.contrib import admin, messages
from django.utils.html import format_html_join

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
    readonly_fields = ["uuid", "created", "updated", "idempotency_key", "last_migration"]
    actions = ["stop_vms", "migrate_vms", "rebuild_elsewhere"]

    @admin.action(description="Rebuild the selected VMs of a fenced host on another host (their disks' data is lost)")
    def rebuild_elsewhere(self, request, queryset):
        failed = []
        for vm in queryset:
            try:
                actions.do_rebuild_vm_elsewhere(request.user, vm)
            except Exception as error:  # one VM's refusal must not hide the others'
                failed.append(f"{vm.name}: {getattr(error, 'detail', error)}")
        messages.info(request, f"Rebuild elsewhere started for {queryset.count() - len(failed)} VM(s).")
        for line in failed:
            messages.error(request, line)

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
        failed = []
        for vm in queryset:
            try:
                actions.do_migrate_vm(request.user, vm)
            except Exception as error:  # one VM's refusal must not hide the others'
                failed.append(f"{vm.name}: {getattr(error, 'detail', error)}")
        messages.info(request, f"Move started for {queryset.count() - len(failed)} VM(s).")
        for line in failed:
            messages.error(request, line)

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
