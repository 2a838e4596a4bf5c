"""The API of a VM's networking: its NICs (attach, detach), its firewall and the public IPv4
addresses mapped to its NICs. (A NIC belongs to its VM: see vms/networking.py.)"""

from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.mixins import ProjectField, ScopedRelatedField
from accounts.scoping import default_project, scoped
from agents.api.serializers import OperationSerializer
from networks.choices import IngressProtocol
from networks.models import NIC, Firewall, IngressRule, IPv4Address
from networks.visibility import networks_visible_to
from vms import networking
from vms.choices import VMStatus
from vms.models import VM


def vms_visible_to(user):
    return scoped(VM.objects.exclude(status=VMStatus.DELETED), user)


def nics_visible_to(user):
    return scoped(NIC.objects.select_related("vm"), user, field="vm__project")


class NICSerializer(serializers.ModelSerializer):
    vm = serializers.SlugRelatedField(slug_field="uuid", read_only=True)
    network = serializers.SlugRelatedField(slug_field="uuid", read_only=True)
    ipv4_addresses = serializers.SlugRelatedField(slug_field="address", many=True, read_only=True)

    class Meta:
        model = NIC
        fields = ["uuid", "vm", "network", "index", "mac", "ipv6_address", "ipv4_addresses", "status",
                  "status_message", "created"]
        read_only_fields = fields


class NICAttachSerializer(serializers.Serializer):
    vm = ScopedRelatedField(vms_visible_to)
    network = ScopedRelatedField(networks_visible_to)

    def validate(self, attrs):
        network, vm = attrs["network"], attrs["vm"]
        if not network.is_public and network.project_id != vm.project_id:
            raise serializers.ValidationError({"network": "The network and the VM must be in the same project."})
        return attrs


class IngressRuleSerializer(serializers.ModelSerializer):
    protocol = serializers.ChoiceField(choices=IngressProtocol.choices)
    port_min = serializers.IntegerField(min_value=1, max_value=65535, required=False, allow_null=True)
    port_max = serializers.IntegerField(min_value=1, max_value=65535, required=False, allow_null=True)
    source = serializers.CharField(max_length=49, required=False, default="::/0")

    class Meta:
        model = IngressRule
        fields = ["protocol", "port_min", "port_max", "source", "description"]


class FirewallSerializer(serializers.Serializer):
    """A VM's whole rule set. PUT replaces it at once; `applied` says the VM's host has it."""

    rules = IngressRuleSerializer(many=True)
    version = serializers.IntegerField(read_only=True)
    applied = serializers.BooleanField(read_only=True)
    error = serializers.CharField(read_only=True)


class IPv4AddressSerializer(serializers.ModelSerializer):
    project = ProjectField(required=False)
    nic = ScopedRelatedField(nics_visible_to, required=False, allow_null=True)
    vm = serializers.SerializerMethodField()
    nat64_prefix = serializers.CharField(source="pool.nat64_prefix", read_only=True)

    class Meta:
        model = IPv4Address
        fields = ["uuid", "address", "project", "nic", "vm", "status", "status_message", "nat64_prefix", "created"]
        read_only_fields = ["uuid", "address", "status", "status_message", "created"]

    def get_vm(self, address) -> str | None:
        return str(address.nic.vm.uuid) if address.nic_id else None


class IPv4MapSerializer(serializers.Serializer):
    nic = ScopedRelatedField(nics_visible_to, allow_null=True,
                             help_text="The NIC to map the address to; null unmaps it.")


class NICChangeSerializer(serializers.Serializer):
    nic = NICSerializer(allow_null=True)
    operation = OperationSerializer(allow_null=True)


class NICViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """NICs of your VMs. POST attaches a VM to a network (hot-plugged when it runs), DELETE detaches."""

    serializer_class = NICSerializer
    lookup_field = "uuid"
    filterset_fields = ["mac", "ipv6_address", "status"]

    def get_queryset(self):
        return scoped(NIC.objects.select_related("vm", "network").prefetch_related("ipv4_addresses"),
                      self.request.user, field="vm__project")

    def _answer(self, nic, operation, code):
        if nic is not None:
            nic = self.get_queryset().filter(pk=nic.pk).first()
        body = {"nic": NICSerializer(nic).data if nic is not None else None,
                "operation": OperationSerializer(operation).data if operation is not None else None}
        return Response(body, status=code)

    @extend_schema(request=NICAttachSerializer, responses={201: NICChangeSerializer, 202: NICChangeSerializer})
    def create(self, request):
        serializer = NICAttachSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        nic, operation = networking.do_attach_nic(request.user, serializer.validated_data["vm"],
                                               serializer.validated_data["network"])
        return self._answer(nic, operation, status.HTTP_202_ACCEPTED if operation else status.HTTP_201_CREATED)

    @extend_schema(responses={202: NICChangeSerializer, 204: None})
    def destroy(self, request, uuid=None):
        nic = self.get_object()
        operation = networking.do_detach_nic(request.user, nic)
        if operation is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return self._answer(nic, operation, status.HTTP_202_ACCEPTED)


class FirewallView(APIView):
    """A VM's stateful ingress rules. Without rules only ICMPv6 and replies to the VM's own
    connections get in; PUT the whole list to change it (it replaces the old one at once)."""

    def _vm(self, request, uuid):
        return get_object_or_404(vms_visible_to(request.user), uuid=uuid)

    def _body(self, vm):
        firewall = Firewall.objects.filter(vm=vm).first()
        return {"rules": IngressRuleSerializer(vm.ingress_rules.all(), many=True).data,
                "version": firewall.version if firewall else 0,
                "applied": firewall.is_applied if firewall else True,
                "error": firewall.error if firewall else ""}

    @extend_schema(responses=FirewallSerializer)
    def get(self, request, uuid):
        return Response(self._body(self._vm(request, uuid)))

    @extend_schema(request=FirewallSerializer, responses={202: FirewallSerializer})
    def put(self, request, uuid):
        vm = self._vm(request, uuid)
        serializer = FirewallSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        networking.do_replace_ingress_rules(request.user, vm, serializer.validated_data["rules"])
        return Response(self._body(vm), status=status.HTTP_202_ACCEPTED)


class IPv4AddressViewSet(viewsets.ModelViewSet):
    """Public IPv4 addresses of your projects (charged monthly), each mapped 1:1 through NAT64 to a
    NIC's IPv6 address or to none. PATCH {"nic": ...} re-maps, {"nic": null} unmaps."""

    serializer_class = IPv4AddressSerializer
    lookup_field = "uuid"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    filterset_fields = ["address", "status"]

    def get_queryset(self):
        return scoped(IPv4Address.objects.select_related("pool", "nic__vm", "project"), self.request.user)

    def perform_create(self, serializer):
        project = serializer.validated_data.get("project") or default_project(self.request.user)
        if project is None:
            raise serializers.ValidationError({"project": "You have no project; create one first."})
        serializer.instance = networking.do_allocate_ipv4(self.request.user, project,
                                                       serializer.validated_data.get("nic"))

    @extend_schema(request=IPv4MapSerializer, responses=IPv4AddressSerializer)
    def partial_update(self, request, uuid=None):
        address = self.get_object()
        serializer = IPv4MapSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
            networking.do_map_ipv4(request.user, address, serializer.validated_data["nic"])
        return Response(IPv4AddressSerializer(self.get_queryset().get(pk=address.pk),
                                              context={"request": request}).data)

    def perform_destroy(self, instance):
        networking.do_release_ipv4(self.request.user, instance)
