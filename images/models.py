import uuid

from django.core.validators import MinValueValidator
from django.db import models

from images.choices import DiskRole, DiskStatus, ImageFormat, ImageStatus, SnapshotStatus, StorageBackend


class Image(models.Model):
    """An OS image. Without a project it is public (published by staff)."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey("accounts.Project", null=True, blank=True, on_delete=models.PROTECT)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    format = models.CharField(max_length=10, choices=ImageFormat.choices, default=ImageFormat.QCOW2)
    status = models.CharField(max_length=12, choices=ImageStatus.choices, default=ImageStatus.PENDING)
    virtual_size_bytes = models.PositiveBigIntegerField(default=0)
    file_size_bytes = models.PositiveBigIntegerField(default=0)
    checksum_sha256 = models.CharField(max_length=64, blank=True)
    storage = models.CharField(max_length=10, choices=StorageBackend.choices, default=StorageBackend.LOCAL)
    # Where the control plane keeps the validated file (a path it chose, never one a customer named).
    location = models.CharField(max_length=500, blank=True)
    # Direct kernel boot, for images that carry no bootloader (paths the control plane chose).
    kernel_location = models.CharField(max_length=500, blank=True)
    initrd_location = models.CharField(max_length=500, blank=True)
    kernel_cmdline = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="image_name_unique_per_project"),
            models.UniqueConstraint(
                fields=["name"], condition=models.Q(project__isnull=True), name="public_image_name_unique"
            ),
        ]

    def __str__(self):
        return self.name

    @property
    def is_public(self) -> bool:
        return self.project_id is None


class Disk(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey("accounts.Project", on_delete=models.PROTECT)
    name = models.CharField(max_length=100)
    vm = models.ForeignKey("vms.VM", null=True, blank=True, on_delete=models.SET_NULL, related_name="disks")
    role = models.CharField(max_length=10, choices=DiskRole.choices, default=DiskRole.DATA)
    image = models.ForeignKey(Image, null=True, blank=True, on_delete=models.PROTECT, related_name="disks")
    size_mib = models.PositiveBigIntegerField(validators=[MinValueValidator(1)])
    status = models.CharField(max_length=10, choices=DiskStatus.choices, default=DiskStatus.PENDING)
    storage = models.CharField(max_length=10, choices=StorageBackend.choices, default=StorageBackend.LOCAL)
    location = models.CharField(max_length=500, blank=True)
    # The host that holds a local disk's file (set when it is first made there); None for rbd.
    host = models.ForeignKey("agents.Host", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(size_mib__gte=1), name="disk_size_positive"),
            models.UniqueConstraint(
                fields=["vm"], condition=models.Q(role="root"), name="one_root_disk_per_vm"
            ),
        ]

    def __str__(self):
        return self.name


class Snapshot(models.Model):
    """A point-in-time, standalone copy of a disk, kept where the disk lives (its host or pool)."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey("accounts.Project", on_delete=models.PROTECT)
    name = models.CharField(max_length=100)
    disk = models.ForeignKey(Disk, null=True, blank=True, on_delete=models.SET_NULL, related_name="snapshots")
    host = models.ForeignKey("agents.Host", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=10, choices=SnapshotStatus.choices, default=SnapshotStatus.PENDING)
    storage = models.CharField(max_length=10, choices=StorageBackend.choices, default=StorageBackend.LOCAL)
    size_bytes = models.PositiveBigIntegerField(default=0)
    virtual_size_bytes = models.PositiveBigIntegerField(default=0)
    checksum_sha256 = models.CharField(max_length=64, blank=True)
    location = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="snapshot_name_unique_per_project"),
        ]

    def __str__(self):
        return self.name


class UnusedBaseImage(models.Model):
    """A base image a host keeps (images/<sha256>.qcow2) that no disk used when the sweep last looked.
    The sweep removes it from the host once it has stayed unused for UNCLOUD_BASE_IMAGE_GRACE_SECONDS;
    a disk that uses it again (or its removal) deletes the row."""

    host = models.ForeignKey("agents.Host", on_delete=models.CASCADE, related_name="+")
    sha256 = models.CharField(max_length=64)
    size_bytes = models.PositiveBigIntegerField(default=0)
    unused_since = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["host", "sha256"], name="unused_base_image_once_per_host")]

    def __str__(self):
        return f"{self.sha256[:12]} on {self.host}"
