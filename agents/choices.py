from django.db import models


class HostTransport(models.TextChoices):
    SSH = "ssh", "SSH"
    # The embedded default: the control plane's own machine is the hypervisor.
    LOCAL = "local", "Local (this machine)"


class HostStatus(models.TextChoices):
    ENABLED = "enabled", "Enabled"
    DRAINING = "draining", "Draining (no new VMs)"
    DOWN = "down", "Down"
    # Emptied by a drain (host.drain moved its VMs away) for staff's work; no VMs until enabled.
    MAINTENANCE = "maintenance", "Maintenance (emptied, no VMs)"


class HostLiveness(models.TextChoices):
    """What the heartbeat watcher (agents/liveness.py) knows of a host, beside staff's `status`."""

    ALIVE = "alive", "Alive"
    SUSPECT = "suspect", "Suspect: missed heartbeats, asking its peers"
    PARTITIONED = "partitioned", "Cut off: peers reach it, the control plane does not"
    DEAD = "dead", "Dead: its peers cannot reach it either"
    FENCED = "fenced", "Fenced: its guests are known to be stopped"


class OperationState(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    # Parked by a step until something changes (e.g. capacity for a VM); woken by wake_waiting().
    WAITING = "waiting", "Waiting"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


TERMINAL_OPERATION_STATES = (OperationState.SUCCEEDED, OperationState.FAILED, OperationState.CANCELLED)
