"""Console tickets (single use, only their hash stored) and console sessions (the audit of who
looked at which VM's console, when, for how long, and why it ended)."""

import uuid

from django.conf import settings
from django.db import models

from consoles.choices import ConsoleKind, SessionEnd


class ConsoleTicket(models.Model):
    """Lets one user open one kind of console of one VM once, within a few seconds."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="console_tickets")
    vm = models.ForeignKey("vms.VM", on_delete=models.CASCADE, related_name="console_tickets")
    kind = models.CharField(max_length=10, choices=ConsoleKind.choices)
    # What the user asked with: an API token, or a portal login session. Either ending ends the console.
    token = models.ForeignKey("accounts.APIToken", null=True, blank=True, on_delete=models.CASCADE)
    session_key = models.CharField(max_length=40, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField()
    used = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return f"{self.kind} console ticket of {self.user} for {self.vm_id}"


class ConsoleSession(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    ticket = models.OneToOneField(ConsoleTicket, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="console_session")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="console_sessions")
    # The VM's row may go; the audit keeps its UUID and name.
    vm = models.ForeignKey("vms.VM", null=True, blank=True, on_delete=models.SET_NULL, related_name="console_sessions")
    vm_uuid = models.UUIDField()
    vm_name = models.CharField(max_length=63)
    project = models.ForeignKey("accounts.Project", null=True, blank=True, on_delete=models.SET_NULL)
    host = models.ForeignKey("agents.Host", null=True, blank=True, on_delete=models.SET_NULL)
    kind = models.CharField(max_length=10, choices=ConsoleKind.choices)
    token = models.ForeignKey("accounts.APIToken", null=True, blank=True, on_delete=models.SET_NULL)
    session_key = models.CharField(max_length=40, blank=True)
    client_address = models.CharField(max_length=45, blank=True)
    gateway = models.CharField(max_length=100, blank=True, help_text="The gateway process that relays it.")
    started = models.DateTimeField(auto_now_add=True)
    # Renewed by the gateway at each re-check: an open session not seen for a while lost its gateway.
    seen = models.DateTimeField()
    ended = models.DateTimeField(null=True, blank=True, db_index=True)
    end_reason = models.CharField(max_length=20, choices=SessionEnd.choices, blank=True)
    bytes_to_client = models.PositiveBigIntegerField(default=0)
    bytes_from_client = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-started"]

    def __str__(self):
        return f"{self.kind} console of {self.vm_name} by {self.user}"

    @property
    def duration(self):
        return (self.ended - self.started) if self.ended else None
