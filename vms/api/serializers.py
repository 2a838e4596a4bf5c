from rest_framework import serializers

from accounts.api.fields import SizeField
from accounts.api.mixins import ProjectField, ScopedRelatedField
from accounts.scoping import default_project, scoped
from images.defaults import no_default_image_reason, site_default_image
from images.visibility import images_visible_to
from networks.visibility import networks_visible_to
from vms.choices import DesiredState
from vms.models import MIN_MEMORY_MIB, VM, SSHKey
from vms.sshkeys import SSHKeyError, parse_public_key
from vms.validators import MAX_USER_DATA_BYTES, VM_NAME, user_data_size_error


class SSHKeySerializer(serializers.ModelSerializer):
    project = ProjectField(required=False)

    class Meta:
        model = SSHKey
        fields = ["uuid", "project", "name", "key_type", "public_key", "fingerprint", "created"]
        read_only_fields = ["uuid", "key_type", "fingerprint", "created"]
        # Uniqueness is checked by the action (409), not by DRF (which would also make `project` required).
        validators = []

    def validate_public_key(self, value):
        try:
            return parse_public_key(value).line
        except SSHKeyError as error:
            raise serializers.ValidationError(str(error)) from None


class SSHKeyUpdateSerializer(serializers.ModelSerializer):
    class Meta:
        model = SSHKey
        fields = ["name"]


class NICBriefSerializer(serializers.Serializer):
    uuid = serializers.UUIDField()
    network = serializers.UUIDField(source="network.uuid")
    mac = serializers.CharField()
    ipv6_address = serializers.CharField()


class VMSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="uuid", read_only=True)
    image = serializers.SlugRelatedField(slug_field="uuid", read_only=True, allow_null=True)
    ssh_keys = serializers.SlugRelatedField(slug_field="uuid", many=True, read_only=True)
    nics = NICBriefSerializer(many=True, read_only=True, source="listed_nics")
    disk_mib = serializers.SerializerMethodField()
    ipv6_addresses = serializers.SerializerMethodField()
    # Honest about what runs where: customers see which hypervisor carries their VM.
    host = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)

    class Meta:
        model = VM
        fields = [
            "uuid", "project", "name", "cores", "memory_mib", "disk_mib", "image", "ssh_keys", "desired_state",
            "status", "status_message", "host", "suspended_reason", "restart_count", "nics", "ipv6_addresses",
            "created", "updated",
        ]
        read_only_fields = fields

    def to_representation(self, vm):
        # The VM views prefetch these as plain lists (VMViewSet.get_queryset): at 100 VMs a page,
        # Django's prefetched managers cost more than the queries. A VM from elsewhere loads them here.
        if not hasattr(vm, "listed_nics"):
            vm.listed_nics = list(vm.nics.select_related("network"))
        if not hasattr(vm, "listed_disks"):
            vm.listed_disks = list(vm.disks.all())
        return super().to_representation(vm)

    def get_disk_mib(self, vm) -> int | None:
        root = next((disk for disk in vm.listed_disks if disk.role == "root"), None)
        return root.size_mib if root else None

    def get_ipv6_addresses(self, vm) -> list[str]:
        return [nic.ipv6_address for nic in vm.listed_nics]


class VMCreateSerializer(serializers.Serializer):
    project = ProjectField(required=False)
    name = serializers.RegexField(VM_NAME, max_length=63, error_messages={
        "invalid": "A VM name is a hostname: 1-63 lowercase letters, digits and '-', not starting or ending with '-'."
    })
    cores = serializers.IntegerField(min_value=1, max_value=256)
    memory = SizeField(min_value=MIN_MEMORY_MIB, max_value=4 * 1024 * 1024, help_text='e.g. "2GiB" or 2048 (MiB)')
    disk = SizeField(min_value=1024, max_value=64 * 1024 * 1024, help_text='root disk, e.g. "20G" or 20480 (MiB)')
    image = ScopedRelatedField(images_visible_to, required=False, allow_null=True, help_text=(
        "Omitted: the site's default image (UNCLOUD_DEFAULT_IMAGE; 400 when there is none). "
        "null: an empty disk."))
    networks = ScopedRelatedField(networks_visible_to, many=True, required=False)
    ssh_keys = ScopedRelatedField(lambda user: scoped(SSHKey.objects.all(), user), many=True, required=False)
    # Passed to the guest byte for byte: no whitespace trimming (a YAML block or a script may end in blanks),
    # and limited in UTF-8 bytes, as the host limits it (a character limit let 2-byte text through to fail later).
    user_data = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False,
                                      help_text=f"cloud-init user-data, at most {MAX_USER_DATA_BYTES} bytes (UTF-8)")
    desired_state = serializers.ChoiceField(
        choices=[DesiredState.RUNNING, DesiredState.STOPPED], default=DesiredState.RUNNING,
        help_text="running (default): create and start; stopped: create it without starting it (start it later).")

    def validate_user_data(self, value):
        error = user_data_size_error(value)
        if error:
            raise serializers.ValidationError(error)
        return value

    def validate(self, attrs):
        project = attrs.get("project") or default_project(self.context["request"].user)
        if project is None:
            raise serializers.ValidationError({"project": "You have no project; create one first."})
        attrs["project"] = project
        for key in attrs.get("ssh_keys", []):
            if key.project_id != project.id:
                raise serializers.ValidationError({"ssh_keys": f"Key {key.name} belongs to another project."})
        for network in attrs.get("networks", []):
            if network.project_id not in (None, project.id):
                raise serializers.ValidationError({"networks": f"Network {network.name} belongs to another project."})
        if "image" not in attrs:
            # Not named: the site's default image. (An explicit null still asks for an empty disk.)
            attrs["image"] = site_default_image()
            if attrs["image"] is None:
                raise serializers.ValidationError({"image": no_default_image_reason()})
        image = attrs.get("image")
        if image is not None and image.project_id not in (None, project.id):
            raise serializers.ValidationError({"image": "That image belongs to another project."})
        return attrs


class VMUpdateSerializer(serializers.Serializer):
    name = serializers.RegexField(VM_NAME, max_length=63)
