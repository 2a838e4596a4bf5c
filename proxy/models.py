"""Names served to IPv4 visitors through the shared proxy, and the hosts that run that proxy."""

import secrets
import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from proxy.choices import DomainStatus


def new_proof_token() -> str:
    return secrets.token_urlsafe(24)


class ProxyHost(models.Model):
    """A host that staff designated to run the shared HTTP(S) proxy and the SSH jump host on its public
    IPv4 address. Customers point their names' A records at `public_ipv4`."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    host = models.OneToOneField("agents.Host", on_delete=models.PROTECT, related_name="proxy_role")
    public_ipv4 = models.GenericIPAddressField(protocol="IPv4", unique=True,
                                               help_text="Where visitors connect: the A record of served names")
    bind_ipv4 = models.GenericIPAddressField(protocol="IPv4", default="0.0.0.0",
                                             help_text="The address HAProxy and the jump sshd listen on")
    jump_port = models.PositiveIntegerField(default=22, validators=[MinValueValidator(1), MaxValueValidator(65535)],
                                            help_text="Port of the jump sshd (the host's own sshd must not use it "
                                                      "on bind_ipv4)")
    is_active = models.BooleanField(default=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    sync_error = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "proxy host"

    def __str__(self):
        return f"{self.host.name} ({self.public_ipv4})"


class DomainName(models.Model):
    """A name IPv4 visitors reach a VM by, through the proxy. Names are stored in lower case and are
    unique across all customers; only a proven name is served (pending: its challenge path only)."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey("accounts.Project", on_delete=models.CASCADE, related_name="domain_names")
    vm = models.ForeignKey("vms.VM", on_delete=models.CASCADE, related_name="domain_names")
    name = models.CharField(max_length=253, unique=True)
    status = models.CharField(max_length=16, choices=DomainStatus.choices, default=DomainStatus.PENDING)
    status_message = models.CharField(max_length=500, blank=True)
    proof_token = models.CharField(max_length=64, default=new_proof_token, editable=False)
    proxy_protocol = models.BooleanField(default=False, help_text="Send the PROXY protocol (v2) header, so the "
                                                                  "guest learns the visitor's address")
    created = models.DateTimeField(auto_now_add=True)
    proven_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def challenge_path(self) -> str:
        return f"/.well-known/uncloud-challenge/{self.proof_token}"
