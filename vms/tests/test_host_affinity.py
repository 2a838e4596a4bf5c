"""One slow host does not stack the reconciler's workers on itself: a host's reconcile runs once at
a time (vms.tasks.reconcile_host); beat's next tick skips a host whose last one still runs. The
reconciler itself is replaced here (its host half runs in the lab tests): only the task's guard is
under test."""

from django.core.cache import cache

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
