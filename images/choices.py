from django.db import models


class ImageFormat(models.TextChoices):
    QCOW2 = "qcow2", "qcow2"


class ImageStatus(models.TextChoices):
    PENDING = "pending", "Waiting for upload"
    VALIDATING = "validating", "Validating"
    AVAILABLE = "available", "Available"
    REJECTED = "rejected", "Rejected"


class StorageBackend(models.TextChoices):
    LOCAL = "local", "Local (qcow2 overlay per disk)"
    RBD = "rbd", "Ceph RBD"


class DiskRole(models.TextChoices):
    ROOT = "root", "Root disk"
    DATA = "data", "Data volume"


class DiskStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    AVAILABLE = "available", "Available"
    IN_USE = "in_use", "In use"
    ERROR = "error", "Error"
    DELETING = "deleting", "Deleting"


class UploadFormat(models.TextChoices):
    """What an upload holds. Raw disks are converted to qcow2 during validation."""

    QCOW2 = "qcow2", "qcow2"
    RAW = "raw", "raw (converted to qcow2)"


class SnapshotStatus(models.TextChoices):
    PENDING = "pending", "Being taken"
    AVAILABLE = "available", "Available"
    ERROR = "error", "Error"
