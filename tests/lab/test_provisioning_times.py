"""The provisioning-times summary: percentiles by nearest rank, read from the operations a test made."""

from datetime import timedelta

from django.utils import timezone

from agents.models import Operation
from tests.lab import provisioning_times


def test_percentiles_by_nearest_rank():
    values = [float(value) for value in range(1, 21)]  # 1..20
    assert provisioning_times.percentile(values, 0.5) == 10
    assert provisioning_times.percentile(values, 0.95) == 19
    assert provisioning_times.percentile([7.0], 0.95) == 7


def test_terminal_operations_are_recorded_and_summarised(db, monkeypatch):
    monkeypatch.setattr(provisioning_times, "_durations", provisioning_times.defaultdict(list))
    now = timezone.now()
    for seconds in (8, 12, 30):
        operation = Operation.objects.create(kind="vm.create", state="succeeded")
        Operation.objects.filter(pk=operation.pk).update(created=now - timedelta(seconds=seconds), finished=now)
    Operation.objects.create(kind="vm.stop", state="running")  # not finished: not a figure
    provisioning_times.record_operations()
    (line,) = provisioning_times.summary_lines()
    assert "vm.create" in line and "n=3" in line and "p50=   12.0 s" in line and "p95=   30.0 s" in line
