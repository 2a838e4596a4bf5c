"""What the control plane keeps for metrics that no other row already says.

Most metrics are read from the rows that are the truth anyway (Operation, Host, VM, AuditEntry, the
billing models): see collectors.py. Kept here, in tables that do not grow with time: how long
operation steps took, how long the periodic jobs ran; and the samples behind the customers' graphs
(pruned after their retention)."""

from django.db import models


class StepDuration(models.Model):
    """How long the steps of operations took, as histogram buckets: one row per kind, step, outcome
    and bucket, counted up as steps run (agents/operations.py sends operation_step_ran). The table
    stays as small as the set of steps, so a scrape costs the same after a million operations.
    `bucket` is the index of the first bound the duration does not exceed (len(STEP_BUCKETS): above
    all of them)."""

    kind = models.CharField(max_length=64)
    step = models.CharField(max_length=64)
    outcome = models.CharField(max_length=10)
    bucket = models.PositiveSmallIntegerField()
    count = models.PositiveBigIntegerField(default=0)
    seconds = models.FloatField(default=0)

    class Meta:
        ordering = ["kind", "step", "outcome", "bucket"]
        constraints = [models.UniqueConstraint(fields=["kind", "step", "outcome", "bucket"],
                                               name="step_duration_once")]

    def __str__(self):
        return f"{self.kind}/{self.step} {self.outcome} bucket {self.bucket}: {self.count}"


class OperationDuration(models.Model):
    """How long operations took from request to end, as histogram buckets per kind and end state
    (agents/operations.py sends operation_finished in the transaction that ends one). Counts every
    operation that ever ended, in a table the size of the set of kinds."""

    kind = models.CharField(max_length=64)
    state = models.CharField(max_length=10)
    bucket = models.PositiveSmallIntegerField()
    count = models.PositiveBigIntegerField(default=0)
    seconds = models.FloatField(default=0)

    class Meta:
        ordering = ["kind", "state", "bucket"]
        constraints = [models.UniqueConstraint(fields=["kind", "state", "bucket"], name="operation_duration_once")]

    def __str__(self):
        return f"{self.kind} {self.state} bucket {self.bucket}: {self.count}"


class JobStat(models.Model):
    """Runs of one periodic Celery task (billing run, dunning, reconcile, sampling): totals and the
    last run, one row per task."""

    task = models.CharField(max_length=100, unique=True)
    runs = models.PositiveBigIntegerField(default=0)
    seconds = models.FloatField(default=0)
    failures = models.PositiveBigIntegerField(default=0)
    last_started = models.DateTimeField(null=True, blank=True)
    last_seconds = models.FloatField(default=0)
    last_succeeded = models.BooleanField(default=True)

    class Meta:
        ordering = ["task"]

    def __str__(self):
        return f"{self.task}: {self.runs} runs"


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
