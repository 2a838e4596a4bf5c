"""What the control plane keeps for metrics that no other row already says.

Most metrics are read from the rows that are the truth anyway (Operation, Host, VM, AuditEntry, the
billing models): see collectors.py. Kept here: how long each operation step took, how long the
periodic jobs ran, and the samples behind the customers' graphs."""

from django.db import models


class StepTiming(models.Model):
    """One run of one operation step (agents/operations.py sends operation_step_ran)."""

    kind = models.CharField(max_length=64)
    step = models.CharField(max_length=64)
    outcome = models.CharField(max_length=10)
    seconds = models.FloatField()
    ran = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-ran", "-id"]
        indexes = [models.Index(fields=["kind", "step"])]

    def __str__(self):
        return f"{self.kind}/{self.step} {self.seconds:.3f} s ({self.outcome})"


class JobRun(models.Model):
    """One run of a periodic Celery task (billing run, dunning, reconcile, sampling)."""

    task = models.CharField(max_length=100, db_index=True)
    started = models.DateTimeField()
    seconds = models.FloatField()
    succeeded = models.BooleanField()

    class Meta:
        ordering = ["-started", "-id"]

    def __str__(self):
        return f"{self.task} {self.started:%Y-%m-%d %H:%M} {self.seconds:.1f} s"


class VMSample(models.Model):
    """A VM's counters as its host's exporter reported them at one moment. Graphs take the rate
    between two samples; a counter that went down means qemu restarted (counted from zero again).
    Kept UNCLOUD_METRICS_RETENTION_HOURS (observability.tasks.sample_vms prunes)."""

    vm_uuid = models.UUIDField()
    taken = models.DateTimeField()
    cpu_seconds = models.FloatField(default=0)
    memory_bytes = models.BigIntegerField(default=0)
    network_receive_bytes = models.BigIntegerField(default=0)
    network_transmit_bytes = models.BigIntegerField(default=0)
    disk_read_bytes = models.BigIntegerField(default=0)
    disk_write_bytes = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["vm_uuid", "taken"]
        indexes = [models.Index(fields=["vm_uuid", "taken"]), models.Index(fields=["taken"])]

    def __str__(self):
        return f"{self.vm_uuid} @ {self.taken:%H:%M:%S}"
