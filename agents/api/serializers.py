from rest_framework import serializers

from agents.models import Host, Operation


class HostSerializer(serializers.ModelSerializer):
    class Meta:
        model = Host
        fields = [
            "uuid", "name", "transport", "ssh_address", "ssh_port", "ssh_user", "host_key", "underlay_device",
            "state_dir", "cores", "memory_mib", "disk_gib", "cpu_overbooking", "memory_overbooking", "status",
            "last_heartbeat", "last_error", "facts", "created",
        ]
        read_only_fields = ["uuid", "last_heartbeat", "last_error", "facts", "created"]

    def validate(self, attrs):
        transport = attrs.get("transport", getattr(self.instance, "transport", "ssh"))
        address = attrs.get("ssh_address", getattr(self.instance, "ssh_address", ""))
        if transport == "ssh" and not address:
            raise serializers.ValidationError({"ssh_address": "An SSH host needs an address."})
        host_key = attrs.get("host_key")
        if host_key:
            from agents.transport import parse_public_key

            try:
                parse_public_key(host_key)
            except ValueError as error:
                raise serializers.ValidationError({"host_key": str(error)}) from None
        return attrs


class OperationSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="uuid", read_only=True, allow_null=True)  # null: host work
    progress = serializers.IntegerField(read_only=True)
    figures = serializers.SerializerMethodField(help_text="Measured figures of the work (e.g. a migration's "
                                                "downtime_ms as QEMU reports it, total_time_ms, bytes sent).")

    def get_figures(self, operation) -> dict:
        return operation.figures

    def get_fields(self):
        fields = super().get_fields()
        request = self.context.get("request")
        if request is None or not request.user.is_staff:
            # The host's own words (paths, command lines, stderr) are for staff; customers read `error`.
            fields.pop("error_detail")
        return fields

    class Meta:
        model = Operation
        fields = [
            "uuid", "kind", "project", "target_kind", "target_uuid", "state", "step", "steps_done", "steps_total",
            "progress", "attempts", "error", "error_detail", "figures", "created", "started", "finished",
        ]
        read_only_fields = fields
