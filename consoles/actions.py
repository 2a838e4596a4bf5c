"""The only writers of console tickets and sessions (Zulip style: atomic, audited)."""

import hashlib
import hmac
import secrets
import string
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from accounts import audit
from consoles.access import console_refusal
from consoles.choices import ConsoleKind, SessionEnd
from consoles.models import ConsoleSession, ConsoleTicket
from vms.models import VM

TICKET_PREFIX = "uct_"
VNC_PASSWORD_ALPHABET = string.ascii_letters + string.digits
VNC_PASSWORD_LENGTH = 8  # all that VNC's DES authentication reads


class ConsoleRefused(Exception):
    """The console cannot be opened: status is the HTTP answer (403, 404, 409), message says why."""

    def __init__(self, status: int, message: str, reason: str = ""):
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason


def hash_ticket(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def vnc_password_of(raw_ticket: str) -> str:
    """The one-time VNC password belongs to the ticket and is derived from it, so it is stored
    nowhere: the browser gets it with the ticket, the gateway derives it when the ticket comes back."""
    digest = hmac.new(settings.SECRET_KEY.encode(), b"vnc-password:" + raw_ticket.encode(), hashlib.sha256).digest()
    return "".join(VNC_PASSWORD_ALPHABET[byte % len(VNC_PASSWORD_ALPHABET)] for byte in digest[:VNC_PASSWORD_LENGTH])


def open_sessions():
    """Sessions still open whose gateway was heard from lately (a vanished gateway's do not count)."""
    fresh = timezone.now() - timedelta(seconds=settings.UNCLOUD_CONSOLE_STALE_SECONDS)
    return ConsoleSession.objects.filter(ended__isnull=True, seen__gte=fresh)


def cap_refusal(user, vm: VM, kind: str) -> str | None:
    per_user = settings.UNCLOUD_CONSOLE_SESSIONS_PER_USER
    if open_sessions().filter(user=user).count() >= per_user:
        return f"You have {per_user} console sessions open, the most allowed; close one first."
    per_vm = settings.UNCLOUD_CONSOLE_SESSIONS_PER_VM
    if open_sessions().filter(vm=vm).count() >= per_vm:
        return f"{vm.name} has {per_vm} console sessions open, the most allowed."
    # qemu's serial socket takes one client at a time: a second would wait silently.
    if kind == ConsoleKind.SERIAL and open_sessions().filter(vm=vm, kind=ConsoleKind.SERIAL).exists():
        return f"The serial console of {vm.name} is open in another session."
    return None


def _refuse_unless_allowed(user, vm: VM, kind: str, token, session_key: str) -> None:
    refusal = console_refusal(user, vm.pk, token=token, session_key=session_key)
    if refusal is not None:
        reason, message = refusal
        raise ConsoleRefused(404 if message == "Not found." else 409, message, reason)
    cap = cap_refusal(user, vm, kind)
    if cap:
        raise ConsoleRefused(409, cap)


@transaction.atomic
def do_issue_console_ticket(user, vm: VM, kind: str, *, token=None, session_key: str = "") -> dict:
    """A single-use ticket for one kind of console of a running VM, valid a few seconds; only its
    hash is kept. Returns the raw ticket, its expiry and (VNC) the one-time password."""
    if kind not in ConsoleKind.values:
        raise ConsoleRefused(400, "kind must be vnc or serial")
    _refuse_unless_allowed(user, vm, kind, token, session_key)
    raw = TICKET_PREFIX + secrets.token_urlsafe(32)
    ticket = ConsoleTicket.objects.create(
        key_hash=hash_ticket(raw), user=user, vm=vm, kind=kind, token=token, session_key=session_key or "",
        expires=timezone.now() + timedelta(seconds=settings.UNCLOUD_CONSOLE_TICKET_SECONDS))
    audit.record(user, "console.ticket", project=vm.project, target=vm, kind=kind)
    return {"ticket": raw, "expires": ticket.expires,
            "vnc_password": vnc_password_of(raw) if kind == ConsoleKind.VNC else None}


def _consume_ticket(raw: str) -> ConsoleTicket:
    """Mark the ticket used in a transaction of its own: a ticket shown once is spent, even when
    what follows refuses the session."""
    now = timezone.now()
    key_hash = hash_ticket(raw or "")
    consumed = ConsoleTicket.objects.filter(key_hash=key_hash, used__isnull=True, expires__gt=now).update(used=now)
    ticket = ConsoleTicket.objects.select_related("user", "vm", "token").filter(key_hash=key_hash).first()
    if ticket is None:
        raise ConsoleRefused(403, "Unknown console ticket.")
    if not consumed:
        raise ConsoleRefused(403, "This console ticket was already used." if ticket.used
                             else "This console ticket has expired.")
    return ticket


def do_open_console_session(raw: str, vm_uuid: str, kind: str, *, client_address: str = "",
                            gateway: str = "") -> tuple[ConsoleSession, str | None]:
    """The gateway's side of a ticket: spend it, check it is for this VM and kind and that its user
    may still open it (access, credential, VM running, caps), then record the session.
    Returns the session and the VNC password to set on the host."""
    ticket = _consume_ticket(raw)
    if str(ticket.vm.uuid) != str(vm_uuid) or ticket.kind != kind:
        raise ConsoleRefused(403, "This console ticket is for another console.")
    with transaction.atomic():
        # Both rows locked: two tickets of one user or one VM cannot both slip under a cap.
        user = get_user_model().objects.select_for_update().get(pk=ticket.user_id)
        vm = VM.objects.select_for_update(no_key=True).select_related("project").get(pk=ticket.vm_id)
        _refuse_unless_allowed(user, vm, kind, ticket.token, ticket.session_key)
        now = timezone.now()
        session = ConsoleSession.objects.create(
            ticket=ticket, user=user, vm=vm, vm_uuid=vm.uuid, vm_name=vm.name, project=vm.project,
            host_id=vm.host_id, kind=kind, token=ticket.token, session_key=ticket.session_key,
            client_address=client_address[:45], gateway=gateway[:100], seen=now)
        audit.record(user, "console.open", project=vm.project, target=vm, kind=kind,
                     session=str(session.uuid), client_address=client_address)
    return session, vnc_password_of(raw) if kind == ConsoleKind.VNC else None


def do_recheck_console_session(session_id: int) -> tuple[str, str] | None:
    """Note that the gateway still holds the session; (reason, message) when it must end now."""
    session = ConsoleSession.objects.select_related("user", "token").filter(pk=session_id).first()
    if session is None:
        return SessionEnd.GATEWAY_LOST, "The session was ended elsewhere."
    if session.ended:  # staff ended it (or a janitor did): the gateway closes it with that reason
        return session.end_reason or SessionEnd.GATEWAY_LOST, session.get_end_reason_display()
    ConsoleSession.objects.filter(pk=session_id, ended__isnull=True).update(seen=timezone.now())
    if session.vm_id is None:
        return SessionEnd.VM_STOPPED, "The VM was deleted."
    return console_refusal(session.user, session.vm_id, token=session.token, session_key=session.session_key,
                           host_id=session.host_id)


@transaction.atomic
def do_end_console_session(session_id: int, reason: str, *, bytes_to_client: int = 0,
                           bytes_from_client: int = 0, actor=None) -> bool:
    """End an open session once (the gateway's own end, a janitor's, or staff's: actor)."""
    now = timezone.now()
    ended = ConsoleSession.objects.filter(pk=session_id, ended__isnull=True).update(
        ended=now, end_reason=reason, bytes_to_client=bytes_to_client, bytes_from_client=bytes_from_client)
    if ended:
        session = ConsoleSession.objects.select_related("user", "project", "vm").get(pk=session_id)
        audit.record(actor or session.user, "console.close", project=session.project, target=session.vm,
                     kind=session.kind, session=str(session.uuid), reason=reason,
                     seconds=round((now - session.started).total_seconds(), 1),
                     bytes_to_client=bytes_to_client, bytes_from_client=bytes_from_client)
    return bool(ended)


def do_end_stale_console_sessions() -> int:
    """End open sessions whose gateway has not been heard from (it crashed or was killed)."""
    stale = timezone.now() - timedelta(seconds=settings.UNCLOUD_CONSOLE_STALE_SECONDS)
    ids = list(ConsoleSession.objects.filter(ended__isnull=True, seen__lt=stale).values_list("pk", flat=True))
    return sum(do_end_console_session(session_id, SessionEnd.GATEWAY_LOST) for session_id in ids)
