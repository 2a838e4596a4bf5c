from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import APIToken
from accounts.scoping import scoped
from consoles.actions import ConsoleRefused, do_issue_console_ticket
from consoles.api.serializers import ConsoleRequestSerializer, ConsoleSessionSerializer, ConsoleTicketSerializer
from consoles.models import ConsoleSession
from consoles.urls_of import console_url
from vms.choices import VMStatus
from vms.models import VM


def vm_of(request, uuid) -> VM:
    return get_object_or_404(scoped(VM.objects.exclude(status=VMStatus.DELETED), request.user), uuid=uuid)


def issue_ticket(request, vm: VM, kind: str) -> dict:
    """For the API and the portal alike: the ticket bound to what the request logged in with."""
    token = request.auth if isinstance(request.auth, APIToken) else None
    session_key = "" if token is not None else (request.session.session_key or "")
    issued = do_issue_console_ticket(request.user, vm, kind, token=token, session_key=session_key)
    return {"kind": kind, **issued, "url": console_url(request, vm.uuid, kind, issued["ticket"])}


class ConsoleView(APIView):
    """A single-use ticket for the VM's console (VNC or serial) and the gateway's WebSocket URL to
    open with it within a few seconds; VNC also gets a one-time VNC password."""

    @extend_schema(request=ConsoleRequestSerializer, responses={
        201: ConsoleTicketSerializer, 400: OpenApiResponse(description="Bad kind."),
        404: OpenApiResponse(description="No such VM in your projects."),
        409: OpenApiResponse(description="The VM is not running, or too many console sessions are open.")})
    def post(self, request, uuid):
        vm = vm_of(request, uuid)
        serializer = ConsoleRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            body = issue_ticket(request, vm, serializer.validated_data["kind"])
        except ConsoleRefused as refused:
            return Response({"detail": refused.message}, status=refused.status)
        return Response(ConsoleTicketSerializer(body).data, status=status.HTTP_201_CREATED)


class ConsoleSessionsView(generics.ListAPIView):
    """The VM's console sessions, newest first: who, from where, when, how long, why they ended."""

    serializer_class = ConsoleSessionSerializer
    filter_backends = []

    def get_queryset(self):
        vm = vm_of(self.request, self.kwargs["uuid"])
        return ConsoleSession.objects.filter(vm=vm).select_related("user")
