from rest_framework import serializers

from accounts.api.mixins import ProjectField, ScopedRelatedField
from accounts.scoping import scoped
from proxy.models import DomainName, ProxyHost
from proxy.names import normalize_domain_name
from vms.choices import VMStatus
from vms.models import VM


def vms_visible_to(user):
    return scoped(VM.objects.exclude(status__in=[VMStatus.DELETING, VMStatus.DELETED]), user)


class DomainNameSerializer(serializers.ModelSerializer):
    """A name served to IPv4 visitors through the shared proxy. Point its A record at one of
    `proxy_addresses`, make `challenge_url` answer `proof_token` (from the VM, on port 80), and the
    name is proven and served: HTTP by Host header, HTTPS by SNI (your VM's own certificate)."""

    project = ProjectField(required=False)
    vm = ScopedRelatedField(vms_visible_to)
    challenge_url = serializers.SerializerMethodField()
    proxy_addresses = serializers.SerializerMethodField()

    class Meta:
        model = DomainName
        fields = ["uuid", "name", "project", "vm", "status", "status_message", "proof_token", "challenge_url",
                  "proxy_addresses", "proxy_protocol", "created", "proven_at"]
        read_only_fields = ["uuid", "status", "status_message", "proof_token", "created", "proven_at"]
        # Uniqueness is the action's (409, under the project lock, case-insensitive after normalizing).
        extra_kwargs = {"name": {"validators": []}}

    def validate_name(self, value):
        try:
            return normalize_domain_name(value)
        except ValueError as error:
            raise serializers.ValidationError(str(error)) from None

    def get_challenge_url(self, domain) -> str:
        return f"http://{domain.name}{domain.challenge_path}"

    def get_proxy_addresses(self, domain) -> list[str]:
        return list(ProxyHost.objects.filter(is_active=True).values_list("public_ipv4", flat=True))


class DomainNameChangeSerializer(serializers.Serializer):
    vm = ScopedRelatedField(vms_visible_to, required=False)
    proxy_protocol = serializers.BooleanField(required=False)
