from rest_framework import serializers

from consoles.choices import ConsoleKind
from consoles.models import ConsoleSession


class ConsoleRequestSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=ConsoleKind.choices, default=ConsoleKind.VNC)


class ConsoleTicketSerializer(serializers.Serializer):
    kind = serializers.CharField()
    ticket = serializers.CharField(help_text="Single use; valid for UNCLOUD_CONSOLE_TICKET_SECONDS.")
    url = serializers.CharField(help_text="The gateway's WebSocket URL with the ticket: open it from a page of this site.")
    expires = serializers.DateTimeField()
    vnc_password = serializers.CharField(allow_null=True, help_text="VNC only: the one-time VNC password.")


class ConsoleSessionSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username")

    class Meta:
        model = ConsoleSession
        fields = ["uuid", "user", "vm_uuid", "vm_name", "kind", "client_address", "started", "ended",
                  "end_reason", "bytes_to_client", "bytes_from_client"]
