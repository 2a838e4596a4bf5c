"""The control plane's /metrics: a Prometheus collector that reads the database at scrape time.

Every family comes from a handful of aggregate queries (GROUP BY), never from one query per object,
so a scrape costs the same few round trips with 10 or 10,000 VMs (bench/metrics.py measures it).
Ended operations and step runs are read from bucket tables that count them as they end
(observability/recording.py), not from their history, so a scrape does not slow down as it grows.
"""

import time

from django.db.models import Count, Min, Sum
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from accounts.models import AuditEntry
from agents.choices import TERMINAL_OPERATION_STATES, HostStatus, OperationState
from agents.models import Alarm, Host, Operation
from billing.choices import BankEntryState
from billing.models import BankEntry, Payment
from observability.models import JobStat, OperationDuration, StepDuration
from observability.recording import OPERATION_BUCKETS, STEP_BUCKETS
from vms.choices import VMStatus
from vms.models import VM, UnknownGuest
from vms.scheduler import rooms

# Audit actions that are reconciler drift (the database and a host disagreed) and HA events.
DRIFT_ACTIONS = {
    "vm.restart_by_reconciler": "restarted", "vm.stop_by_reconciler": "stopped",
    "vm.restart_given_up": "restart_given_up", "host.unknown_vm": "unknown_vm",
    "host.unknown_vm_stopped": "unknown_vm_stopped",
}
HA_ACTIONS = (
    "host.suspect", "host.dead", "host.partitioned", "host.fenced", "host.alive", "host.fence_confirmed",
    "host.return", "vm.host_failure", "vm.evacuate", "vm.restart_in_place", "alarm.raised",
)
WAITING_STATES = (OperationState.PENDING, OperationState.WAITING)


def _seconds(delta) -> float:
    return delta.total_seconds() if delta is not None else 0.0


def _cumulative_histogram(name, documentation, labels, rows, bounds):
    """rows: (label values..., bucket index, count, seconds) with one row per bucket that was hit;
    bucket index len(bounds) is above every bound."""
    groups: dict[tuple, dict] = {}
    width = len(labels)
    for row in rows:
        group = groups.setdefault(tuple(row[:width]), {"counts": [0] * (len(bounds) + 1), "sum": 0.0})
        group["counts"][min(row[width], len(bounds))] += row[width + 1]
        group["sum"] += row[width + 2]
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for label_values, group in sorted(groups.items()):
        running, buckets = 0, []
        for bound, count in zip([*map(floatToGoString, bounds), "+Inf"], group["counts"], strict=True):
            running += count
            buckets.append((bound, running))
        family.add_metric(list(label_values), buckets, group["sum"])
    return family


class ControlPlaneCollector:
    def collect(self):
        started = time.perf_counter()
        now = timezone.now()
        yield from self.operations(now)
        yield from self.hosts(now)
        yield from self.vms()
        yield from self.drift_and_ha()
        yield from self.jobs()
        yield from self.billing(now)
        duration = GaugeMetricFamily("uncloud_metrics_collect_seconds", "How long this scrape's database reads took")
        duration.add_metric([], time.perf_counter() - started)
        yield duration

    def operations(self, now):
        by_kind_state = GaugeMetricFamily("uncloud_operations", "Operations by kind and state",
                                          labels=["kind", "state"])
        oldest = {state: None for state in WAITING_STATES}
        queued = dict.fromkeys(WAITING_STATES, 0)
        # Unfinished ones from their rows (few, found by the state index); ended ones from the
        # duration buckets, which count each operation once when it ends.
        for row in Operation.objects.exclude(state__in=TERMINAL_OPERATION_STATES).values("kind", "state") \
                .annotate(n=Count("id"), oldest=Min("created")).order_by("kind", "state"):
            by_kind_state.add_metric([row["kind"], row["state"]], row["n"])
            if row["state"] in oldest:
                queued[row["state"]] += row["n"]
                if oldest[row["state"]] is None or row["oldest"] < oldest[row["state"]]:
                    oldest[row["state"]] = row["oldest"]
        ended = list(OperationDuration.objects.values_list("kind", "state", "bucket", "count", "seconds"))
        totals: dict[tuple, int] = {}
        for kind, state, _, count, _ in ended:
            totals[(kind, state)] = totals.get((kind, state), 0) + count
        for (kind, state), count in sorted(totals.items()):
            by_kind_state.add_metric([kind, state], count)
        yield by_kind_state
        depth = GaugeMetricFamily("uncloud_operation_queue_depth",
                                  "Operations not started yet (pending) or parked until something changes "
                                  "(waiting, e.g. for capacity)", labels=["state"])
        age = GaugeMetricFamily("uncloud_operation_oldest_waiting_seconds",
                                "Age of the oldest operation in this state (0: none)", labels=["state"])
        for state in WAITING_STATES:
            depth.add_metric([state], queued[state])
            age.add_metric([state], _seconds(now - oldest[state]) if oldest[state] else 0.0)
        yield depth
        yield age
        running = Operation.objects.filter(state=OperationState.RUNNING).aggregate(oldest=Min("started"))
        longest = GaugeMetricFamily("uncloud_operation_oldest_running_seconds",
                                    "How long the longest-running operation has been running (0: none)")
        longest.add_metric([], _seconds(now - running["oldest"]) if running["oldest"] else 0.0)
        yield longest

        # created -> finished: for vm.create that is the customer's create-to-running.
        yield _cumulative_histogram(
            "uncloud_operation_duration_seconds",
            "From request to terminal state, per kind and end state (vm.create: create to running)",
            ["kind", "state"], ended, OPERATION_BUCKETS)
        yield _cumulative_histogram(
            "uncloud_operation_step_duration_seconds", "One run of one step of an operation",
            ["kind", "step", "outcome"],
            StepDuration.objects.values_list("kind", "step", "outcome", "bucket", "count", "seconds"), STEP_BUCKETS)


    def hosts(self, now):
        hosts = list(Host.objects.all())
        status = GaugeMetricFamily("uncloud_host_info", "One per host: its staff status and liveness",
                                   labels=["host", "status", "liveness"])
        by_status = GaugeMetricFamily("uncloud_hosts", "Hosts by status", labels=["status"])
        heartbeat = GaugeMetricFamily("uncloud_host_heartbeat_age_seconds",
                                      "Seconds since the host last answered (absent: never)", labels=["host"])
        counts = dict.fromkeys(HostStatus.values, 0)
        for host in hosts:
            counts[host.status] = counts.get(host.status, 0) + 1
            status.add_metric([host.name, host.status, host.liveness], 1)
            if host.last_heartbeat is not None:
                heartbeat.add_metric([host.name], _seconds(now - host.last_heartbeat))
        for name, count in counts.items():
            by_status.add_metric([name], count)
        yield status
        yield by_status
        yield heartbeat

        capacity = GaugeMetricFamily(
            "uncloud_host_capacity", "What a host offers to VMs (its size times the overbooking ratio)",
            labels=["host", "resource"])
        physical = GaugeMetricFamily("uncloud_host_physical", "A host's own size", labels=["host", "resource"])
        free = GaugeMetricFamily("uncloud_host_free",
                                 "Left for new VMs (capacity minus what placed VMs ask for; negative: overbooked "
                                 "beyond its ratio)", labels=["host", "resource"])
        overbooking = GaugeMetricFamily("uncloud_host_overbooking_ratio", "Staff's overbooking ratios",
                                        labels=["host", "resource"])
        for room in rooms(hosts):
            host = room.host
            offered = {"cores": float(host.cores * host.cpu_overbooking),
                       "memory_mib": float(host.memory_mib * host.memory_overbooking),
                       "disk_mib": float(host.disk_gib * 1024)}
            left = {"cores": float(room.free_cores), "memory_mib": float(room.free_memory_mib),
                    "disk_mib": float(room.free_disk_mib)}
            for resource in offered:
                capacity.add_metric([host.name, resource], offered[resource])
                free.add_metric([host.name, resource], left[resource])
            physical.add_metric([host.name, "cores"], host.cores)
            physical.add_metric([host.name, "memory_mib"], host.memory_mib)
            physical.add_metric([host.name, "disk_mib"], host.disk_gib * 1024)
            overbooking.add_metric([host.name, "cores"], float(host.cpu_overbooking))
            overbooking.add_metric([host.name, "memory"], float(host.memory_overbooking))
        yield capacity
        yield physical
        yield free
        yield overbooking

    def vms(self):
        by_status = GaugeMetricFamily("uncloud_vms", "VMs by status (deleted ones left out)", labels=["status"])
        counts = dict.fromkeys([value for value in VMStatus.values if value != VMStatus.DELETED], 0)
        for row in VM.objects.exclude(status=VMStatus.DELETED).values("status").annotate(n=Count("id")):
            counts[row["status"]] = row["n"]
        for name, count in counts.items():
            by_status.add_metric([name], count)
        yield by_status

    def drift_and_ha(self):
        events = {row["action"]: row["n"] for row in AuditEntry.objects.filter(
            action__in=[*DRIFT_ACTIONS, *HA_ACTIONS]).values("action").annotate(n=Count("id"))}
        drift = CounterMetricFamily("uncloud_reconciler_drift", "What the reconciler found and corrected "
                                    "(from the audit log)", labels=["kind"])
        for action, kind in DRIFT_ACTIONS.items():
            drift.add_metric([kind], events.get(action, 0))
        yield drift
        unknown = GaugeMetricFamily("uncloud_unknown_guests",
                                    "Guests a host runs that the database does not want, not stopped yet")
        unknown.add_metric([], UnknownGuest.objects.filter(stopped_at__isnull=True).count())
        yield unknown
        restarts = CounterMetricFamily("uncloud_vm_restarts", "Restarts by the reconciler over all VMs")
        restarts.add_metric([], VM.objects.aggregate(total=Sum("restart_count"))["total"] or 0)
        yield restarts
        ha = CounterMetricFamily("uncloud_ha_events", "Host failure handling (from the audit log)",
                                 labels=["event"])
        for action in HA_ACTIONS:
            ha.add_metric([action], events.get(action, 0))
        yield ha
        alarms = GaugeMetricFamily("uncloud_alarms_active", "Alarms not cleared (admin: Alarms)", labels=["kind"])
        for row in Alarm.objects.filter(cleared__isnull=True).values("kind").annotate(n=Count("id")):
            alarms.add_metric([row["kind"]], row["n"])
        yield alarms

    def jobs(self):
        runs = CounterMetricFamily("uncloud_job_runs", "Runs of periodic jobs", labels=["task"])
        failures = CounterMetricFamily("uncloud_job_failures", "Runs of periodic jobs that failed", labels=["task"])
        seconds = CounterMetricFamily("uncloud_job_seconds", "Time spent in periodic jobs", labels=["task"])
        last_seconds = GaugeMetricFamily("uncloud_job_last_duration_seconds",
                                         "Duration of the last run (billing.run_monthly_billing: the billing run)",
                                         labels=["task"])
        last_ok = GaugeMetricFamily("uncloud_job_last_success", "1 when the last run succeeded", labels=["task"])
        last_time = GaugeMetricFamily("uncloud_job_last_run_timestamp_seconds", "When the last run started",
                                      labels=["task"])
        for stat in JobStat.objects.all():
            runs.add_metric([stat.task], stat.runs)
            failures.add_metric([stat.task], stat.failures)
            seconds.add_metric([stat.task], stat.seconds)
            last_seconds.add_metric([stat.task], stat.last_seconds)
            last_ok.add_metric([stat.task], 1 if stat.last_succeeded else 0)
            if stat.last_started is not None:
                last_time.add_metric([stat.task], stat.last_started.timestamp())
        yield from (runs, failures, seconds, last_seconds, last_ok, last_time)

    def billing(self, now):
        payments = CounterMetricFamily("uncloud_payments", "Payments received, by method and currency",
                                       labels=["method", "currency"])
        amounts = CounterMetricFamily("uncloud_payments_amount", "Sum of payments received (major units)",
                                      labels=["method", "currency"])
        for row in Payment.objects.filter(reversed_at__isnull=True).values("method", "currency").annotate(
                n=Count("id"), total=Sum("amount")):
            payments.add_metric([row["method"], row["currency"]], row["n"])
            amounts.add_metric([row["method"], row["currency"]], float(row["total"] or 0))
        yield payments
        yield amounts
        entries = GaugeMetricFamily("uncloud_bank_entries", "Bank entries by state", labels=["state"])
        counts = dict.fromkeys(BankEntryState.values, 0)
        for row in BankEntry.objects.values("state").annotate(n=Count("id")):
            counts[row["state"]] = row["n"]
        for name, count in counts.items():
            entries.add_metric([name], count)
        yield entries
        oldest = BankEntry.objects.filter(state=BankEntryState.UNMATCHED).aggregate(oldest=Min("created"))["oldest"]
        age = GaugeMetricFamily("uncloud_bank_unmatched_oldest_seconds",
                                "Age of the oldest bank entry waiting for staff (0: none)")
        age.add_metric([], _seconds(now - oldest) if oldest else 0.0)
        yield age
