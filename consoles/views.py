"""The portal's Console tab: noVNC or xterm.js in the page, a ticket from the API, the bytes
through the console gateway (the web process itself never reaches a host)."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render

from accounts.csp import csp_allow
from accounts.scoping import scoped
from consoles.choices import ConsoleKind
from consoles.models import ConsoleSession
from consoles.urls_of import gateway_origin
from vms.choices import VMStatus
from vms.models import VM


@login_required
def vm_console(request, uuid):
    vm = get_object_or_404(scoped(VM.objects.exclude(status=VMStatus.DELETED), request.user).select_related("project"),
                           uuid=uuid)
    kind = request.GET.get("kind") if request.GET.get("kind") in ConsoleKind.values else ConsoleKind.VNC
    sessions = ConsoleSession.objects.filter(vm=vm).select_related("user")[:10]
    response = render(request, "consoles/console.html", {"vm": vm, "kind": kind, "sessions": sessions,
                                                         "kinds": ConsoleKind.choices})
    # The page's script talks to the gateway: only its origin joins connect-src, only on this page.
    return csp_allow(connect_src=[gateway_origin(request)])(lambda request: response)(request)
