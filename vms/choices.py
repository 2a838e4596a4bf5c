from django.db import models


class DesiredState(models.TextChoices):
    RUNNING = "running", "Running"
    STOPPED = "stopped", "Stopped"
    DELETED = "deleted", "Deleted"


class VMStatus(models.TextChoices):
    """What we last saw (or are doing). The customer sees this."""

    PENDING = "pending", "Pending"
    WAITING_FOR_CAPACITY = "waiting", "Waiting for capacity"
    BUILDING = "building", "Building"
    STARTING = "starting", "Starting"
    RUNNING = "running", "Running"
    MIGRATING = "migrating", "Moving to another host"
    STOPPING = "stopping", "Stopping"
    STOPPED = "stopped", "Stopped"
    DELETING = "deleting", "Deleting"
    DELETED = "deleted", "Deleted"
    ERROR = "error", "Error"
    # Its host failed (vms/failover.py): being restarted elsewhere, or waiting for the host (local disks).
    HOST_DOWN = "host_down", "Host failure"


# What the customer may ask for in each status (anything else is a 409 with the reason).
STARTABLE = {VMStatus.STOPPED, VMStatus.ERROR}
STOPPABLE = {VMStatus.RUNNING, VMStatus.STARTING, VMStatus.ERROR}


class SchedulerStrategy(models.TextChoices):
    SPREAD = "spread", "Spread: the host with the most free memory"
    PACK = "pack", "Pack: the fullest host that still fits"


class SSHKeyType(models.TextChoices):
    ED25519 = "ssh-ed25519", "Ed25519"
    ECDSA_256 = "ecdsa-sha2-nistp256", "ECDSA P-256"
    ECDSA_384 = "ecdsa-sha2-nistp384", "ECDSA P-384"
    ECDSA_521 = "ecdsa-sha2-nistp521", "ECDSA P-521"
    RSA = "ssh-rsa", "RSA"
    SK_ED25519 = "sk-ssh-ed25519@openssh.com", "Ed25519 security key"
    SK_ECDSA = "sk-ecdsa-sha2-nistp256@openssh.com", "ECDSA security key"


class FailoverPriority(models.IntegerChoices):
    """Which VMs of a failed host restart elsewhere first (staff set it; a hoster may sell it)."""

    LOW = 0, "Low"
    NORMAL = 1, "Normal"
    HIGH = 2, "High"
