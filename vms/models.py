import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from vms.choices import DesiredState, FailoverPriority, SSHKeyType, VMStatus
from vms.validators import validate_vm_name

MIN_MEMORY_MIB = 128


class SSHKey(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey("accounts.Project", on_delete=models.CASCADE, related_name="ssh_keys")
    name = models.CharField(max_length=100)
    key_type = models.CharField(max_length=40, choices=SSHKeyType.choices, editable=False)
    public_key = models.TextField()
    fingerprint = models.CharField(max_length=60, editable=False)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]
        verbose_name = "SSH key"
        constraints = [
            models.UniqueConstraint(fields=["project", "fingerprint"], name="sshkey_unique_per_project"),
            models.UniqueConstraint(fields=["project", "name"], name="sshkey_name_unique_per_project"),
        ]

    def __str__(self):
        return f"{self.name} ({self.fingerprint})"


class VM(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey("accounts.Project", on_delete=models.PROTECT, related_name="vms")
    name = models.CharField(max_length=63, validators=[validate_vm_name])
    cores = models.PositiveSmallIntegerField(validators=[MinValueValidator(1), MaxValueValidator(256)])
    memory_mib = models.PositiveIntegerField(validators=[MinValueValidator(MIN_MEMORY_MIB)])
    image = models.ForeignKey("images.Image", null=True, blank=True, on_delete=models.PROTECT, related_name="vms")
    ssh_keys = models.ManyToManyField(SSHKey, blank=True, related_name="vms")
    user_data = models.TextField(blank=True)
    desired_state = models.CharField(max_length=10, choices=DesiredState.choices, default=DesiredState.RUNNING)
    status = models.CharField(max_length=10, choices=VMStatus.choices, default=VMStatus.PENDING, db_index=True)
    status_message = models.TextField(blank=True)
    host = models.ForeignKey("agents.Host", null=True, blank=True, on_delete=models.PROTECT, related_name="vms")
    # Set while billing keeps the VM stopped for an unpaid bill; the portal shows it.
    suspended_reason = models.CharField(max_length=300, blank=True)
    suspended_at = models.DateTimeField(null=True, blank=True)
    # desired_state before a suspension, so paying brings back what ran (and only that).
    state_before_suspension = models.CharField(max_length=10, choices=DesiredState.choices, blank=True)
    # How often the reconciler found it not running when it should have been, and restarted it.
    restart_count = models.PositiveIntegerField(default=0)
    # Raised by every placement for a start (create, start, evacuate): the host-side vm-up carries
    # it, a host refuses an older one and kills a running copy that a newer start outlived.
    generation = models.PositiveBigIntegerField(default=0)
    # When its host fails, VMs restart elsewhere highest first (then oldest first): while room is
    # short, the first to be placed get it.
    failover_priority = models.PositiveSmallIntegerField(choices=FailoverPriority.choices,
                                                         default=FailoverPriority.NORMAL)
    # A retried create with the same key returns the same VM instead of making a second one.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    # sha256 of the create request the key came with: the same key with another request is refused (422).
    idempotency_fingerprint = models.CharField(max_length=64, blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        verbose_name = "VM"
        constraints = [
            models.UniqueConstraint(
                fields=["project", "name"], condition=~models.Q(desired_state="deleted"), name="vm_name_unique_per_project"
            ),
            models.UniqueConstraint(fields=["project", "idempotency_key"], name="vm_idempotency_key_unique"),
            models.CheckConstraint(condition=models.Q(cores__gte=1), name="vm_cores_positive"),
            models.CheckConstraint(condition=models.Q(memory_mib__gte=MIN_MEMORY_MIB), name="vm_memory_minimum"),
        ]

    def __str__(self):
        return self.name


class UnknownGuest(models.Model):
    """A VM the host runs but the database does not want (deleted, or never known): reported by the
    reconciler and stopped after a grace period, so a lost race never leaves a qemu burning."""

    host = models.ForeignKey("agents.Host", on_delete=models.CASCADE, related_name="unknown_guests")
    vm_uuid = models.UUIDField()
    name = models.CharField(max_length=100, blank=True)
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(auto_now=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-first_seen"]
        constraints = [models.UniqueConstraint(fields=["host", "vm_uuid"], name="unknown_guest_once_per_host")]

    def __str__(self):
        return f"{self.vm_uuid} on {self.host}"
