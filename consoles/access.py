"""Who may hold a VM's console, asked when a ticket is issued, when the gateway opens the session,
and again every few seconds while it is open."""

from importlib import import_module

from django.conf import settings

from accounts.scoping import scoped
from consoles.choices import SessionEnd
from vms.choices import DesiredState, VMStatus
from vms.models import VM


def login_session_alive(session_key: str) -> bool:
    store = import_module(settings.SESSION_ENGINE).SessionStore
    return store().exists(session_key)


def console_refusal(user, vm_id: int, *, token=None, session_key: str = "", host_id=None):
    """None when the user may hold the VM's console now, else (SessionEnd reason, message).
    host_id: the host the open session reaches; the VM being elsewhere now ends it."""
    if user is None or not user.is_active:
        return SessionEnd.ACCESS_LOST, "The account is disabled."
    vm = scoped(VM.objects.filter(pk=vm_id), user).values("status", "desired_state", "host_id").first()
    if vm is None:
        return SessionEnd.ACCESS_LOST, "Not found."
    if token is not None:
        token.refresh_from_db(fields=["revoked", "expires"])
        if not token.is_active:
            return SessionEnd.CREDENTIAL_GONE, "The API token was revoked or expired."
    if session_key and not login_session_alive(session_key):
        return SessionEnd.CREDENTIAL_GONE, "The login session ended."
    if vm["status"] == VMStatus.MIGRATING or (host_id is not None and vm["host_id"] != host_id):
        return SessionEnd.VM_MOVED, "The VM is moving to another host."
    if vm["status"] != VMStatus.RUNNING or vm["desired_state"] != DesiredState.RUNNING or vm["host_id"] is None:
        return SessionEnd.VM_STOPPED, "The VM is not running."
    return None
