from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.scoping import default_project, scoped
from agents.api.serializers import OperationSerializer
from networks import actions
from networks.api.serializers import (
    FirewallSerializer,
    IngressRuleSerializer,
    IPv4AddressSerializer,
    IPv4MapSerializer,
    NetworkSerializer,
    NetworkUpdateSerializer,
    NICAttachSerializer,
    NICSerializer,
    vms_visible_to,
)
from networks.models import NIC, Firewall, IPv4Address
from networks.visibility import networks_visible_to


class NetworkViewSet(viewsets.ModelViewSet):
    """Your private networks and the site's public ones (read-only to you)."""

    lookup_field = "uuid"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    filterset_fields = ["name", "is_public", "vni"]

    def get_queryset(self):
        queryset = networks_visible_to(self.request.user).select_related("project")
        if self.action in ("partial_update", "destroy"):
            # Public networks are staff's: customers see them but cannot change them (404 like any stranger's).
            queryset = queryset.filter(project__isnull=False)
        return queryset

    def get_serializer_class(self):
        return NetworkUpdateSerializer if self.action == "partial_update" else NetworkSerializer

    def perform_create(self, serializer):
        project = serializer.validated_data.get("project") or default_project(self.request.user)
        serializer.instance = actions.do_create_network(self.request.user, project, serializer.validated_data["name"])

    def perform_update(self, serializer):
        # PATCH sends only what changes: an empty body changes nothing (and is no error).
        if "name" in serializer.validated_data:
            actions.do_rename_network(self.request.user, serializer.instance, serializer.validated_data["name"])

    def perform_destroy(self, instance):
        actions.do_delete_network(self.request.user, instance)


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
        nic, operation = actions.do_attach_nic(request.user, serializer.validated_data["vm"],
                                               serializer.validated_data["network"])
        return self._answer(nic, operation, status.HTTP_202_ACCEPTED if operation else status.HTTP_201_CREATED)

    @extend_schema(responses={202: NICChangeSerializer, 204: None})
    def destroy(self, request, uuid=None):
        nic = self.get_object()
        operation = actions.do_detach_nic(request.user, nic)
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
        actions.do_replace_ingress_rules(request.user, vm, serializer.validated_data["rules"])
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
        serializer.instance = actions.do_allocate_ipv4(self.request.user, project,
                                                       serializer.validated_data.get("nic"))

    @extend_schema(request=IPv4MapSerializer, responses=IPv4AddressSerializer)
    def partial_update(self, request, uuid=None):
        address = self.get_object()
        serializer = IPv4MapSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
            actions.do_map_ipv4(request.user, address, serializer.validated_data["nic"])
        return Response(IPv4AddressSerializer(self.get_queryset().get(pk=address.pk),
                                              context={"request": request}).data)

    def perform_destroy(self, instance):
        actions.do_release_ipv4(self.request.user, instance)
