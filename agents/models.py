import uuid
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from agents.choices import HostLiveness, HostStatus, HostTransport, OperationState
from agents.validators import validate_absolute_path, validate_host_name, validate_ifname


class Host(models.Model):
    """A hypervisor. Staff register it; the reconciler keeps `status` and the heartbeat honest."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=253, unique=True, validators=[validate_host_name])
    transport = models.CharField(max_length=10, choices=HostTransport.choices, default=HostTransport.SSH)
    ssh_address = models.CharField(max_length=255, blank=True, help_text="IPv6/IPv4 address or DNS name")
    ssh_port = models.PositiveIntegerField(default=22, validators=[MinValueValidator(1), MaxValueValidator(65535)])
    ssh_user = models.CharField(max_length=32, default="root")
    host_key = models.TextField(
        blank=True, help_text="Pinned public host key ('ssh-ed25519 AAAA...'); a changed key is refused."
    )
    underlay_device = models.CharField(max_length=15, default="eth0", validators=[validate_ifname])
    # Where other hosts route a VM's traffic for this host (NAT64 return path, mapped IPv4).
    underlay_address = models.GenericIPAddressField(protocol="IPv6", null=True, blank=True)
    state_dir = models.CharField(max_length=255, default="/var/lib/uncloud", validators=[validate_absolute_path])
    cores = models.PositiveIntegerField(default=0)
    memory_mib = models.PositiveBigIntegerField(default=0)
    disk_gib = models.PositiveBigIntegerField(default=0)
    cpu_overbooking = models.DecimalField(
        max_digits=5, decimal_places=2, default=Decimal("4.00"), validators=[MinValueValidator(Decimal("0.1"))]
    )
    memory_overbooking = models.DecimalField(
        max_digits=5, decimal_places=2, default=Decimal("1.00"), validators=[MinValueValidator(Decimal("0.1"))]
    )
    status = models.CharField(max_length=20, choices=HostStatus.choices, default=HostStatus.ENABLED)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    facts = models.JSONField(default=dict, blank=True, help_text="What the host said of itself at its last check")
    # High availability (agents/liveness.py): the watcher's view, and how a failed host is fenced.
    liveness = models.CharField(max_length=12, choices=HostLiveness.choices, default=HostLiveness.ALIVE)
    liveness_since = models.DateTimeField(null=True, blank=True)
    fenced_at = models.DateTimeField(null=True, blank=True)
    # Set while the host's Ceph client address is blocklisted: staff lift it when they return the host.
    storage_fenced_address = models.CharField(max_length=100, blank=True)
    fence_log = models.JSONField(default=list, blank=True, help_text="What each fence step did, newest last")
    ceph_client_address = models.CharField(
        max_length=100, blank=True,
        help_text="The address this host's Ceph clients use (blocklisted to fence it); empty: its underlay address",
    )
    power_fence_command = models.JSONField(
        default=list, blank=True,
        help_text='Optional power fence, run by the control plane as an argument list, e.g. '
                  '["ipmitool", "-H", "bmc1", "-U", "admin", "-f", "/etc/uncloud/bmc1.pw", "power", "off"]; '
                  "exit status 0 counts as fenced.",
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(transport=HostTransport.SSH) | ~models.Q(ssh_address=""),
                name="host_ssh_needs_address",
            ),
        ]

    def __str__(self):
        return self.name


class Operation(models.Model):
    """The durable record of one long piece of work, advanced one idempotent step at a time.

    Celery only carries "advance operation N"; this row says what is done, what is next and who
    holds it (the lease). See agents/operations.py.
    """

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=64, db_index=True)
    project = models.ForeignKey("accounts.Project", null=True, blank=True, on_delete=models.CASCADE)
    target_kind = models.CharField(max_length=32, blank=True)
    target_uuid = models.UUIDField(null=True, blank=True, db_index=True)
    host = models.ForeignKey(Host, null=True, blank=True, on_delete=models.SET_NULL)
    state = models.CharField(
        max_length=10, choices=OperationState.choices, default=OperationState.PENDING, db_index=True
    )
    step = models.CharField(max_length=64, blank=True)
    steps_done = models.PositiveIntegerField(default=0)
    steps_total = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0, help_text="Tries of the current step")
    lease_owner = models.CharField(max_length=100, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True, db_index=True)
    holder_token = models.BigIntegerField(
        null=True, blank=True, help_text="The last claim's rank on its target, sent with its host calls")
    payload = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, help_text="What went wrong, for the customer: the cause in plain words")
    error_detail = models.TextField(
        blank=True, help_text="Staff only: the host's own words, paths and commands behind the error")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["state", "lease_until"])]
        constraints = [
            models.CheckConstraint(condition=models.Q(steps_done__lte=models.F("steps_total")), name="op_steps_done_le_total"),
        ]

    def __str__(self):
        return f"{self.kind} {self.uuid} ({self.state})"

    # Figures an operation may publish from its result (a migration's downtime, time and bytes);
    # the rest of a result is for its steps.
    PUBLISHED_FIGURES = ("total_time_ms", "downtime_ms", "ram_transferred_bytes", "mirror_bytes",
                         "downtime_limit_ms", "elapsed_ms")

    @property
    def figures(self) -> dict:
        return {key: self.result[key] for key in self.PUBLISHED_FIGURES if self.result.get(key) is not None}

    @property
    def progress(self) -> int:
        """Percent of steps done."""
        if self.state == OperationState.SUCCEEDED:
            return 100
        return int(100 * self.steps_done / self.steps_total) if self.steps_total else 0


class Alarm(models.Model):
    """Something staff must look at that the control plane will not fix by itself (e.g. most hosts
    silent at once: a switch or the control plane's own network, so nothing is evacuated)."""

    kind = models.CharField(max_length=64, db_index=True)
    message = models.TextField()
    details = models.JSONField(default=dict, blank=True)
    raised = models.DateTimeField(auto_now_add=True)
    cleared = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-raised", "-id"]

    def __str__(self):
        return f"{self.kind}: {self.message[:80]}"
