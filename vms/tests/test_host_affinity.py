"""One slow host does not stack the reconciler's workers on itself: a host's reconcile runs once at
a time (vms.tasks.reconcile_host); beat's next tick skips a host whose last one still runs. The
reconciler itself is replaced here (its host half runs in the lab tests): only the task's guard is
under test."""

from datetime import timedelta

from django.core.cache import cache
from django.utils import timezone

from agents.models import Operation
from agents.operations import start_operation
from vms import reconciler, tasks
from vms.tests.test_actions import make_host


def test_a_hosts_reconcile_runs_once_at_a_time(db, monkeypatch):
    host = make_host("hv-slow")
    reconciled = []
    monkeypatch.setattr(reconciler, "reconcile_host",
                        lambda host: reconciled.append(host.name) or reconciler.Drift(host=host.name))
    key = f"uncloud:reconcile-host:{host.id}"
    cache.add(key, "running", timeout=90)  # the previous tick's reconcile is still in its inventory call
    try:
        assert tasks.reconcile_host(host.id) == {"host": "hv-slow", "skipped": "its previous reconcile is still running"}
        assert reconciled == []
    finally:
        cache.delete(key)
    assert tasks.reconcile_host(host.id)["host"] == "hv-slow"
    assert reconciled == ["hv-slow"] and cache.get(key) is None  # done: the next tick may run


def test_a_host_busy_with_operations_is_reconciled_at_a_later_tick(db, monkeypatch, settings):
    settings.UNCLOUD_HOST_WORKER_SLOTS = 1
    host = make_host("hv-busy")
    reconciled = []
    monkeypatch.setattr(reconciler, "reconcile_host",
                        lambda host: reconciled.append(host.name) or reconciler.Drift(host=host.name))
    operation = start_operation("host.check", target=host, host=host)
    Operation.objects.filter(pk=operation.pk).update(state="running", lease_owner="worker:1",
                                                     lease_until=timezone.now() + timedelta(minutes=1))
    assert tasks.reconcile_host(host.id)["skipped"] == "the host is busy with operations"
    Operation.objects.filter(pk=operation.pk).update(state="succeeded", lease_owner="", lease_until=None)
    tasks.reconcile_host(host.id)
    assert reconciled == ["hv-busy"]
