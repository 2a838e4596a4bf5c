"""The control plane's /metrics and the Prometheus service discovery: who may read them, and that the
figures are the database's (read in a fixed number of queries whatever the number of objects)."""

import re
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from accounts import audit
from accounts.tests.conftest import enrol_totp, login_with_otp, totp_code
from agents import operations
from agents.choices import HostTransport, OperationState
from agents.models import Alarm, Host, Operation
from agents.operations import PermanentStepError, Step, register_workflow
from billing.models import BankEntry, BankStatement
from observability.models import JobStat, StepDuration
from vms.models import VM

TOKEN = "scrape-secret-7f3a"

register_workflow("test.metrics-two-steps", [Step("first", lambda op: {"a": 1}), Step("second", lambda op: None)])
register_workflow("test.metrics-done", [Step("only", lambda op: None)])


def _refuse(operation):
    raise PermanentStepError("the host said no")


register_workflow("test.metrics-broken", [Step("only", _refuse)])


def samples(text) -> dict:
    """{(sample name, frozenset(labels)): value}"""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found, name, **labels):
    return found[(name, frozenset(labels.items()))]


@pytest.fixture
def scraper(db, client, settings):
    settings.UNCLOUD_METRICS_TOKEN = TOKEN

    def get(path):
        return client.get(path, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    return get


def make_host(name, **fields):
    defaults = {"ssh_address": "fd00:ff::2", "cores": 8, "memory_mib": 16384, "disk_gib": 100,
                "cpu_overbooking": Decimal("4.00"), "memory_overbooking": Decimal("1.50"),
                "last_heartbeat": timezone.now() - timedelta(seconds=5)}
    defaults.update(fields)
    return Host.objects.create(name=name, **defaults)


def make_vm(project, name, host=None, status="running", cores=2, memory_mib=1024):
    return VM.objects.create(project=project, name=name, cores=cores, memory_mib=memory_mib, host=host, status=status)


def finished_operation(seconds, fail=False):
    """An operation requested `seconds` ago that the engine ends now (its one step runs)."""
    kind = "test.metrics-broken" if fail else "test.metrics-done"
    operation = Operation.objects.create(kind=kind, step="only", steps_total=1)
    Operation.objects.filter(pk=operation.pk).update(created=timezone.now() - timedelta(seconds=seconds))
    assert operations.advance(operation.id, enqueue_next=False) == ("failed" if fail else "succeeded")
    return operation


def test_metrics_need_staff_or_the_scraper_token(client, settings, alice, staff, client_for):
    settings.UNCLOUD_METRICS_TOKEN = TOKEN
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics/targets", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    # A customer's API token is no scraper token, nor is a customer's session.
    assert client_for(alice).get("/metrics").status_code == 403
    client.force_login(alice)
    assert client.get("/metrics").status_code == 403
    client.logout()
    answer = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert answer.status_code == 200 and answer["Content-Type"].startswith("text/plain")
    # Without a configured token no bearer opens it, not even an empty one.
    settings.UNCLOUD_METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403
    device, _ = enrol_totp(staff)
    login_with_otp(client, "staff", "staff-password-1", totp_code(device, steps_ahead=1))
    assert client.get("/metrics").status_code == 200
    assert client.post("/metrics").status_code == 405


def test_figures_come_from_the_database(scraper, alice_project, monkeypatch):
    monkeypatch.setattr(operations, "enqueue", lambda op_id, countdown=0: None)
    hv1 = make_host("hv1")
    make_host("hv2", status="down", last_heartbeat=None)
    make_vm(alice_project, "a", hv1, cores=4, memory_mib=4096)
    make_vm(alice_project, "b", hv1, status="stopped")
    make_vm(alice_project, "c", None, status="waiting")
    make_vm(alice_project, "gone", hv1, status="deleted")
    for seconds in (4, 8, 25):
        finished_operation(seconds)
    finished_operation(100, fail=True)
    cancelled = Operation.objects.create(kind="test.metrics-done")
    assert operations.cancel(Operation.objects.get(pk=cancelled.pk), "its VM was deleted")
    pending = Operation.objects.create(kind="vm.start", state=OperationState.PENDING)
    Operation.objects.filter(pk=pending.pk).update(created=timezone.now() - timedelta(seconds=90))
    Operation.objects.create(kind="vm.create", state=OperationState.WAITING)
    audit.record(None, "vm.restart_by_reconciler")
    audit.record(None, "vm.restart_by_reconciler")
    audit.record(None, "host.dead", target=hv1)
    Alarm.objects.create(kind="mass-failure", message="half the hosts are silent")
    statement = BankStatement.objects.create(kind="camt054", sha256="0" * 64)
    entry = BankEntry.objects.create(statement=statement, entry_key="e1", amount=Decimal("12.50"), currency="CHF",
                                     state="unmatched")
    BankEntry.objects.filter(pk=entry.pk).update(created=timezone.now() - timedelta(hours=2))
    BankEntry.objects.create(statement=statement, entry_key="e2", amount=Decimal("1.00"), currency="CHF",
                             state="matched")

    found = samples(scraper("/metrics").content.decode())
    assert value(found, "uncloud_vms", status="running") == 1
    assert value(found, "uncloud_vms", status="stopped") == 1
    assert value(found, "uncloud_vms", status="waiting") == 1
    assert ("uncloud_vms", frozenset({("status", "deleted")})) not in found
    create = {"kind": "test.metrics-done", "state": "succeeded"}
    assert value(found, "uncloud_operation_duration_seconds_bucket", le="5.0", **create) == 1
    assert value(found, "uncloud_operation_duration_seconds_bucket", le="10.0", **create) == 2
    assert value(found, "uncloud_operation_duration_seconds_bucket", le="+Inf", **create) == 3
    assert value(found, "uncloud_operation_duration_seconds_count", **create) == 3
    assert value(found, "uncloud_operation_duration_seconds_sum", **create) == pytest.approx(37, abs=1)
    assert value(found, "uncloud_operation_duration_seconds_count", kind="test.metrics-broken", state="failed") == 1
    assert value(found, "uncloud_operation_duration_seconds_count", kind="test.metrics-done", state="cancelled") == 1
    assert value(found, "uncloud_operations", kind="test.metrics-done", state="succeeded") == 3
    assert value(found, "uncloud_operations", kind="vm.start", state="pending") == 1
    assert value(found, "uncloud_operation_queue_depth", state="pending") == 1
    assert value(found, "uncloud_operation_queue_depth", state="waiting") == 1
    assert 89 < value(found, "uncloud_operation_oldest_waiting_seconds", state="pending") < 200
    assert value(found, "uncloud_hosts", status="enabled") == 1
    assert value(found, "uncloud_hosts", status="down") == 1
    assert 4 < value(found, "uncloud_host_heartbeat_age_seconds", host="hv1") < 60
    assert ("uncloud_host_heartbeat_age_seconds", frozenset({("host", "hv2")})) not in found
    # hv1: 8 cores x 4 = 32 offered, VMs a and b ask for 6; 16 GiB x 1.5 offered, 5 GiB asked for.
    assert value(found, "uncloud_host_capacity", host="hv1", resource="cores") == 32
    assert value(found, "uncloud_host_free", host="hv1", resource="cores") == 26
    assert value(found, "uncloud_host_free", host="hv1", resource="memory_mib") == 16384 * 1.5 - 5120
    assert value(found, "uncloud_host_overbooking_ratio", host="hv1", resource="memory") == 1.5
    assert value(found, "uncloud_reconciler_drift_total", kind="restarted") == 2
    assert value(found, "uncloud_ha_events_total", event="host.dead") == 1
    assert value(found, "uncloud_alarms_active", kind="mass-failure") == 1
    assert value(found, "uncloud_bank_entries", state="unmatched") == 1
    assert value(found, "uncloud_bank_entries", state="matched") == 1
    assert 7000 < value(found, "uncloud_bank_unmatched_oldest_seconds") < 7400


def test_the_engine_records_each_step_and_jobs_their_duration(scraper, monkeypatch, settings,
                                                               django_capture_on_commit_callbacks):
    monkeypatch.setattr(operations, "enqueue", lambda op_id, countdown=0: None)
    with django_capture_on_commit_callbacks(execute=True):
        operation = operations.start_operation("test.metrics-two-steps")
    assert operations.advance(operation.id) == "advanced"
    assert operations.advance(operation.id) == "succeeded"
    assert sorted(StepDuration.objects.values_list("kind", "step", "outcome", "count")) == [
        ("test.metrics-two-steps", "first", "succeeded", 1), ("test.metrics-two-steps", "second", "succeeded", 1)]
    with django_capture_on_commit_callbacks(execute=True):
        again = operations.start_operation("test.metrics-two-steps")
    operations.advance(again.id)
    assert StepDuration.objects.filter(step="first").values_list("count", flat=True).get() == 2  # counted up

    # A periodic job's run is timed through Celery's own task signals (eager here, a worker in production).
    settings.CELERY_TASK_ALWAYS_EAGER = True
    from billing.tasks import run_monthly_billing

    run_monthly_billing.apply()
    run_monthly_billing.apply()
    stat = JobStat.objects.get(task="billing.run_monthly_billing")
    assert (stat.runs, stat.failures, stat.last_succeeded) == (2, 0, True) and stat.seconds >= stat.last_seconds

    found = samples(scraper("/metrics").content.decode())
    step = {"kind": "test.metrics-two-steps", "step": "first", "outcome": "succeeded"}
    assert value(found, "uncloud_operation_step_duration_seconds_count", **step) == 2
    assert value(found, "uncloud_operation_step_duration_seconds_bucket", le="+Inf", **step) == 2
    # A step of a few milliseconds lands in the first bucket, and buckets are cumulative.
    assert value(found, "uncloud_operation_step_duration_seconds_bucket", le="0.05", **step) == 2
    assert value(found, "uncloud_job_runs_total", task="billing.run_monthly_billing") == 2
    assert value(found, "uncloud_job_last_success", task="billing.run_monthly_billing") == 1
    assert value(found, "uncloud_job_last_duration_seconds", task="billing.run_monthly_billing") == \
        pytest.approx(stat.last_seconds)


def test_a_scrape_costs_the_same_queries_with_more_objects(scraper, alice_project, monkeypatch):
    monkeypatch.setattr(operations, "enqueue", lambda op_id, countdown=0: None)
    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert scraper("/metrics").status_code == 200
        return len(captured.captured_queries)

    host = make_host("hv1")
    make_vm(alice_project, "first", host)
    finished_operation(5)
    few = queries()
    for index in range(2, 12):
        make_host(f"hv{index}")
        make_vm(alice_project, f"vm-{index}", host)
        finished_operation(index)
        finished_operation(index * 10, fail=True)
    assert queries() == few


def test_request_latency_is_measured_by_route(scraper, api):
    assert api["alice"].get("/api/v1/vms/").status_code == 200
    missing = uuid.uuid4()
    assert api["alice"].get(f"/api/v1/vms/{missing}/").status_code == 404
    found = samples(scraper("/metrics").content.decode())
    measured = [key for key, count in found.items()
                if key[0] == "uncloud_http_request_duration_seconds_count" and count >= 1]
    counted = [key for key in measured if ("area", "api") in key[1] and ("status", "2xx") in key[1]]
    assert counted, "no API request was measured"
    # A route is the URL pattern, never a request's own path: no UUID in a label (cardinality).
    routes = {dict(key[1])["route"] for key in measured}
    assert not any(re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-", route) for route in routes), routes


def test_service_discovery_lists_the_control_plane_and_every_host_exporter(scraper, settings):
    settings.UNCLOUD_SITE_NAME = "zurich-1"
    settings.UNCLOUD_HOST_EXPORTER_PORT = 9847
    make_host("hv1", ssh_address="fd00:ff::2")
    make_host("hv2", ssh_address="192.0.2.7", status="down")
    Host.objects.create(name="local", transport=HostTransport.LOCAL, ssh_address="", state_dir="/var/lib/uncloud")
    groups = scraper("/metrics/targets").json()
    control_plane, *hosts = groups
    assert control_plane["targets"] == ["testserver"]
    assert control_plane["labels"]["uncloud_role"] == "control-plane"
    assert control_plane["labels"]["site"] == "zurich-1"
    by_host = {group["labels"]["host"]: group for group in hosts}
    assert by_host["hv1"]["targets"] == ["[fd00:ff::2]:9847"]
    assert by_host["hv2"]["targets"] == ["192.0.2.7:9847"]
    assert by_host["hv2"]["labels"]["status"] == "down"
    assert by_host["local"]["targets"] == ["127.0.0.1:9847"]
    assert all(group["labels"]["site"] == "zurich-1" and group["labels"]["uncloud_role"] == "host"
               for group in hosts)
    settings.UNCLOUD_METRICS_SELF_TARGET = "cp.example:8000"
    assert scraper("/metrics/targets").json()[0]["targets"] == ["cp.example:8000"]
    settings.UNCLOUD_HOST_EXPORTER_PORT = 0
    assert len(scraper("/metrics/targets").json()) == 1


def test_operations_that_ended_before_the_upgrade_are_counted_once(db):
    import importlib

    from django.apps import apps

    from observability.models import OperationDuration

    backfill = importlib.import_module("observability.migrations.0003_operation_durations").count_ended_operations
    now = timezone.now()
    for seconds in (3, 4, 700):
        operation = Operation.objects.create(kind="vm.create", state="succeeded")
        Operation.objects.filter(pk=operation.pk).update(created=now - timedelta(seconds=seconds), finished=now)
    Operation.objects.create(kind="vm.create", state="running")
    OperationDuration.objects.all().delete()
    backfill(apps, None)
    assert sorted(OperationDuration.objects.values_list("bucket", "count")) == [(2, 2), (14, 1)]
    assert sum(OperationDuration.objects.values_list("seconds", flat=True)) == pytest.approx(707)
