from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse
from django.utils.html import format_html_join

from accounts.adminactions import calling, run_action_on_each
from agents.admin import HostAdmin
from agents.models import Host, Operation
from vms import actions as vm_actions
from vms.choices import FailoverPriority
from vms.drain import DRAIN, do_drain_host
from vms.migration import FIGURES, MIGRATE
from vms.models import VM, SSHKey
from vms.views import ResizeForm, price_quote


@admin.register(VM)
class VMAdmin(admin.ModelAdmin):
    """Read-only: a VM changes through its actions (the same do_* functions as the API), so every
    change has its operation, its audit row and its order; a staff edit of cores or host could not."""

    list_display = ["name", "project", "status", "desired_state", "cores", "memory_mib", "host", "failover_priority",
                    "created"]
    list_filter = ["status", "desired_state", "host", "failover_priority"]
    search_fields = ["name", "uuid", "nics__ipv6_address", "nics__mac", "project__name", "project__owner__username"]
    actions = [
        calling("start_vms", vm_actions.do_start_vm, "Start the selected VMs", "Start requested"),
        calling("stop_vms", vm_actions.do_stop_vm, "Stop the selected VMs", "Stop requested"),
        calling("reboot_vms", vm_actions.do_reboot_vm, "Reboot the selected VMs", "Reboot requested"),
        calling("suspend_vms", lambda actor, vm: vm_actions.do_suspend_vm(actor, vm, "Suspended by staff."),
                "Suspend the selected VMs (stopped until staff resume them)", "Suspended"),
        calling("resume_vms", vm_actions.do_resume_vm, "Resume the selected suspended VMs", "Resumed"),
        calling("delete_vms", vm_actions.do_delete_vm, "Delete the selected VMs", "Deletion requested"),
        calling("migrate_vms", vm_actions.do_migrate_vm,
                "Move the selected running VMs to another host (live; the scheduler picks it)", "Move started"),
        calling("rebuild_elsewhere", vm_actions.do_rebuild_vm_elsewhere,
                "Rebuild the selected VMs of a fenced host on another host (their disks' data is lost)",
                "Rebuild elsewhere started"),
        "resize_vms",
        *[calling(f"failover_priority_{priority.name.lower()}",
                  lambda actor, vm, priority=priority: vm_actions.do_set_failover_priority(actor, vm, priority),
                  f"Failover priority {priority.label.lower()}: restart order when their host fails",
                  f"Failover priority set to {priority.label.lower()}")
          for priority in FailoverPriority],
    ]

    @admin.action(description="Resize the selected VMs (a page asks for the size and shows the new price)")
    def resize_vms(self, request, queryset):
        """Staff resize through do_resize_vm (quota, billing's replacing order, a move when the host
        lacks room), in two steps: the size, then the new monthly price of each VM and the confirmation."""
        vms = list(queryset.select_related("project"))
        first = vms[0]
        root_mib = {vm.pk: sum(disk.size_mib for disk in vm.disks.filter(role="root")) for vm in vms}
        form = ResizeForm(request.POST if "size" in request.POST else None, initial={
            "cores": first.cores, "memory": f"{first.memory_mib}MiB", "disk": f"{root_mib[first.pk]}MiB"})
        rows, priced = [], ""
        if form.is_bound and form.is_valid():
            data = form.cleaned_data
            priced = f"{data['cores']}:{data['memory']}:{data['disk']}"
            if request.POST.get("priced") == priced:
                run_action_on_each(request, queryset, lambda actor, vm: vm_actions.do_resize_vm(
                    actor, vm, cores=data["cores"], memory_mib=data["memory"], disk_mib=data["disk"]),
                    "Resize requested")
                return None
            rows = [(vm, price_quote(vm.project, vm.cores, vm.memory_mib, root_mib[vm.pk]),
                     price_quote(vm.project, data["cores"], data["memory"], max(data["disk"], root_mib[vm.pk])))
                    for vm in vms]
        return TemplateResponse(request, "admin/vms/resize.html", {
            **self.admin_site.each_context(request), "title": "Resize VMs", "opts": self.model._meta,
            "form": form, "vms": vms, "rows": rows, "priced": priced,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        })

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in VM._meta.get_fields() if field.concrete] + ["last_migration"]

    def has_add_permission(self, request):
        return False  # VMs are ordered through the API or the portal, with quota and billing

    def has_delete_permission(self, request, obj=None):
        return False  # the "Delete" action above goes through do_delete_vm

    @admin.display(description="Last move (live migration)")
    def last_migration(self, vm):
        migration = Operation.objects.filter(kind=MIGRATE, target_uuid=vm.uuid).order_by("-created").first()
        if migration is None:
            return "never moved"
        figures = [(key, migration.result[key]) for key in FIGURES if migration.result.get(key) is not None]
        return format_html_join("", "<div>{}: {}</div>", [("state", migration.state), *figures,
                                                          ("error", migration.error or "-")])


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
