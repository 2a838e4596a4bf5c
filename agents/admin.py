from django.contrib import admin, messages

from agents import actions as host_actions
from agents.choices import HostLiveness
from agents.hosts import do_check_host, do_return_host
from agents.models import Alarm, Host, Operation


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ["name", "transport", "ssh_address", "status", "liveness", "liveness_since", "cores",
                    "memory_mib", "accelerator", "last_heartbeat"]
    list_filter = ["status", "liveness", "transport"]
    search_fields = ["name", "ssh_address"]
    # Status changes only through the actions below (agents/actions.py: conditional update + audit).
    readonly_fields = ["uuid", "status", "last_heartbeat", "last_error", "accelerator", "facts", "created",
                       "liveness", "liveness_since", "fenced_at", "storage_fenced_address", "fence_log"]
    actions = ["check_hosts", "drain_hosts", "disable_hosts", "enable_hosts", "return_hosts"]

    @admin.display(description="Accelerator")
    def accelerator(self, host):
        """What `auto` starts guests with, and why (from the last check's KVM test guest)."""
        facts = host.facts or {}
        if "kvm_usable" not in facts:
            return "unknown (not checked yet)"
        reason = facts.get("kvm_reason") or ""
        return f"KVM ({reason})" if facts["kvm_usable"] else f"TCG, no KVM ({reason})"

    @admin.action(description="Return the selected fenced hosts to service (lifts their Ceph blocklist)")
    def return_hosts(self, request, queryset):
        fenced = [host for host in queryset if host.liveness == HostLiveness.FENCED]
        for host in fenced:
            do_return_host(request.user, host)
        messages.info(request, f"Returning {len(fenced)} fenced host(s) to service.")

    @admin.action(description="Check the selected hosts now")
    def check_hosts(self, request, queryset):
        for host in queryset:
            do_check_host(request.user, host)
        messages.info(request, f"Started a check of {queryset.count()} host(s).")


    def _transition(self, request, queryset, action, done):
        changed = sum(1 for host in queryset if action(request.user, host))
        messages.info(request, f"{changed} host(s) {done}.")

    @admin.action(description="Drain the selected hosts (no new VMs; running ones stay)")
    def drain_hosts(self, request, queryset):
        self._transition(request, queryset, host_actions.do_mark_host_draining, "now draining")

    @admin.action(description="Disable the selected hosts (mark down: no new VMs)")
    def disable_hosts(self, request, queryset):
        self._transition(request, queryset, host_actions.do_disable_host, "now down")

    @admin.action(description="Enable the selected hosts")
    def enable_hosts(self, request, queryset):
        self._transition(request, queryset, host_actions.do_enable_host, "now enabled")


@admin.register(Operation)
class OperationAdmin(admin.ModelAdmin):
    list_display = ["created", "kind", "target_kind", "target_uuid", "state", "step", "attempts", "host"]
    list_filter = ["state", "kind"]
    search_fields = ["uuid", "target_uuid", "error"]
    readonly_fields = [f.name for f in Operation._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(Alarm)
class AlarmAdmin(admin.ModelAdmin):
    """Raised by the heartbeat watcher (e.g. most hosts silent at once); staff read them here."""

    list_display = ["raised", "kind", "message", "cleared"]
    list_filter = ["kind", ("cleared", admin.EmptyFieldListFilter)]
    readonly_fields = ["kind", "message", "details", "raised", "cleared"]

    def has_add_permission(self, request):
        return False
