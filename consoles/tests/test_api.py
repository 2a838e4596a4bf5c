"""Console tickets and sessions without a host: who gets a ticket (alice owner, bob member, charlie
404), what the gateway's side refuses (used, expired, another VM or kind, caps), and what ends an
open session (member removed, token revoked, login ended, VM stopped or moved). The lab test
(tests/browser/test_console_lab.py) runs all of it through the real gateway and browser."""

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from accounts.actions import do_create_token, do_remove_member, do_revoke_token
from accounts.choices import TokenScope
from accounts.models import AuditEntry
from accounts.tests.test_admin import staff_client  # noqa: F401  (the fixture)
from consoles import actions
from consoles.actions import ConsoleRefused, do_open_console_session, do_recheck_console_session
from consoles.choices import SessionEnd
from consoles.models import ConsoleSession, ConsoleTicket
from vms.actions import do_create_vm
from vms.choices import DesiredState, VMStatus
from vms.models import VM
from vms.tests.test_actions import make_host


@pytest.fixture
def host(db):
    return make_host("hv1")


def running_vm(actor, project, host, name="web1") -> VM:
    vm, _ = do_create_vm(actor, project, name=name, cores=1, memory_mib=512, disk_mib=1024, start=False)
    # Set up as the workers would leave it (no host runs here): running on hv1.
    VM.objects.filter(pk=vm.pk).update(status=VMStatus.RUNNING, desired_state=DesiredState.RUNNING, host=host)
    vm.refresh_from_db()
    return vm


def ticket_of(response) -> str:
    return parse_qs(urlsplit(response.json()["url"]).query)["ticket"][0]


def post_console(client, vm, kind="vnc"):
    return client.post(f"/api/v1/vms/{vm.uuid}/console/", {"kind": kind}, format="json")


def test_owner_and_member_get_tickets_strangers_get_404(api, alice, alice_project, host, settings):
    settings.UNCLOUD_CONSOLE_URL = "wss://console.example.com/ws"
    vm = running_vm(alice, alice_project, host)
    answer = post_console(api["alice"], vm)
    assert answer.status_code == 201, answer.json()
    body = answer.json()
    assert body["url"].startswith(f"wss://console.example.com/ws/{vm.uuid}/vnc/?ticket=uct_")
    assert body["kind"] == "vnc" and len(body["vnc_password"]) == 8 and body["vnc_password"].isalnum()
    raw = ticket_of(answer)
    stored = ConsoleTicket.objects.get()
    assert stored.key_hash == actions.hash_ticket(raw) and raw not in str(ConsoleTicket.objects.values().get())
    assert stored.expires - stored.created <= timedelta(seconds=settings.UNCLOUD_CONSOLE_TICKET_SECONDS + 1)
    assert stored.token is not None and stored.session_key == ""

    serial = post_console(api["bob"], vm, "serial")
    assert serial.status_code == 201 and serial.json()["vnc_password"] is None
    assert post_console(api["charlie"], vm).status_code == 404
    assert post_console(api["alice"], vm, "rdp").status_code == 400
    assert AuditEntry.objects.filter(action="console.ticket").count() == 2
    assert api["charlie"].get(f"/api/v1/vms/{vm.uuid}/console/sessions/").status_code == 404
    assert api["bob"].get(f"/api/v1/vms/{vm.uuid}/console/sessions/").json()["results"] == []


def test_read_only_tokens_and_stopped_vms_get_no_console(client_for, alice, alice_project, host):
    from rest_framework.test import APIClient

    vm = running_vm(alice, alice_project, host)
    _, raw = do_create_token(alice, "ro", scope=TokenScope.READ)
    reader = APIClient()
    reader.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert post_console(reader, vm).status_code == 403
    VM.objects.filter(pk=vm.pk).update(status=VMStatus.STOPPED, desired_state=DesiredState.STOPPED)
    stopped = post_console(client_for(alice), vm)
    assert stopped.status_code == 409 and "not running" in stopped.json()["detail"]
    assert not ConsoleTicket.objects.exists()


def test_a_ticket_opens_once_only_its_own_console_and_only_in_time(api, alice, alice_project, host):
    vm = running_vm(alice, alice_project, host)
    other = running_vm(alice, alice_project, host, name="web2")
    raw = ticket_of(post_console(api["alice"], vm))
    with pytest.raises(ConsoleRefused) as wrong_vm:
        do_open_console_session(raw, str(other.uuid), "vnc")
    assert wrong_vm.value.status == 403 and "another console" in wrong_vm.value.message
    # Shown once, spent: even the refused attempt used it up.
    with pytest.raises(ConsoleRefused) as used:
        do_open_console_session(raw, str(vm.uuid), "vnc")
    assert "already used" in used.value.message

    raw = ticket_of(post_console(api["alice"], vm))
    with pytest.raises(ConsoleRefused) as wrong_kind:
        do_open_console_session(raw, str(vm.uuid), "serial")
    assert wrong_kind.value.status == 403

    raw = ticket_of(post_console(api["alice"], vm))
    ConsoleTicket.objects.filter(key_hash=actions.hash_ticket(raw)).update(expires=timezone.now())
    with pytest.raises(ConsoleRefused) as expired:
        do_open_console_session(raw, str(vm.uuid), "vnc")
    assert "expired" in expired.value.message
    with pytest.raises(ConsoleRefused) as unknown:
        do_open_console_session("uct_nothing", str(vm.uuid), "vnc")
    assert unknown.value.status == 403 and "Unknown" in unknown.value.message

    raw = ticket_of(post_console(api["alice"], vm))
    session, password = do_open_console_session(raw, str(vm.uuid), "vnc", client_address="2001:db8::1")
    assert password == actions.vnc_password_of(raw)
    assert session.user == alice and session.host == host and session.vm_name == "web1"
    assert AuditEntry.objects.filter(action="console.open").count() == 1
    assert do_recheck_console_session(session.pk) is None
    assert actions.do_end_console_session(session.pk, SessionEnd.CLIENT_CLOSED, bytes_to_client=10)
    assert not actions.do_end_console_session(session.pk, SessionEnd.IDLE)  # ends once
    session.refresh_from_db()
    assert session.end_reason == SessionEnd.CLIENT_CLOSED and session.bytes_to_client == 10
    assert AuditEntry.objects.get(action="console.close").data["reason"] == "client_closed"


def test_caps_per_user_per_vm_and_one_serial(api, alice, bob, alice_project, host, settings):
    settings.UNCLOUD_CONSOLE_SESSIONS_PER_USER = 2
    settings.UNCLOUD_CONSOLE_SESSIONS_PER_VM = 2
    vm = running_vm(alice, alice_project, host)
    other = running_vm(alice, alice_project, host, name="web2")
    do_open_console_session(ticket_of(post_console(api["alice"], vm)), str(vm.uuid), "vnc")
    # Two tickets taken before the cap filled: the gateway's check is the one that counts.
    late = [ticket_of(post_console(api["alice"], other)) for _ in range(2)]
    do_open_console_session(late[0], str(other.uuid), "vnc")
    with pytest.raises(ConsoleRefused) as capped:
        do_open_console_session(late[1], str(other.uuid), "vnc")
    assert capped.value.status == 409 and "2 console sessions open" in capped.value.message
    assert post_console(api["alice"], vm).status_code == 409
    do_open_console_session(ticket_of(post_console(api["bob"], vm)), str(vm.uuid), "vnc")
    vm_full = post_console(api["bob"], vm)
    assert vm_full.status_code == 409 and "web1 has 2 console sessions open" in vm_full.json()["detail"]
    settings.UNCLOUD_CONSOLE_SESSIONS_PER_VM = 5
    settings.UNCLOUD_CONSOLE_SESSIONS_PER_USER = 4
    do_open_console_session(ticket_of(post_console(api["bob"], vm, "serial")), str(vm.uuid), "serial")
    second_serial = post_console(api["bob"], vm, "serial")
    assert second_serial.status_code == 409 and "serial console of web1 is open" in second_serial.json()["detail"]
    settings.UNCLOUD_CONSOLE_SESSIONS_PER_USER = 2
    # A session whose gateway vanished stops counting and is ended by the janitor.
    ConsoleSession.objects.filter(user=alice).update(seen=timezone.now() - timedelta(minutes=5))
    assert post_console(api["alice"], vm).status_code == 201
    assert actions.do_end_stale_console_sessions() == 2
    assert set(ConsoleSession.objects.filter(user=alice).values_list("end_reason", flat=True)) == {"gateway_lost"}


def test_what_ends_an_open_session(api, client_for, alice, bob, alice_project, host):
    vm = running_vm(alice, alice_project, host)
    bobs, _ = do_open_console_session(ticket_of(post_console(api["bob"], vm)), str(vm.uuid), "vnc")
    do_remove_member(alice, alice_project, bob)
    assert do_recheck_console_session(bobs.pk)[0] == SessionEnd.ACCESS_LOST
    actions.do_end_console_session(bobs.pk, SessionEnd.ACCESS_LOST)  # what the gateway does then

    token, raw = do_create_token(alice, "console")
    from rest_framework.test import APIClient
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    alices, _ = do_open_console_session(ticket_of(post_console(client, vm)), str(vm.uuid), "vnc")
    assert do_recheck_console_session(alices.pk) is None
    do_revoke_token(alice, token)
    assert do_recheck_console_session(alices.pk)[0] == SessionEnd.CREDENTIAL_GONE
    actions.do_end_console_session(alices.pk, SessionEnd.CREDENTIAL_GONE)

    session, _ = do_open_console_session(ticket_of(post_console(api["alice"], vm)), str(vm.uuid), "vnc")
    VM.objects.filter(pk=vm.pk).update(host=make_host("hv2"))
    assert do_recheck_console_session(session.pk)[0] == SessionEnd.VM_MOVED
    VM.objects.filter(pk=vm.pk).update(host=host, status=VMStatus.MIGRATING)
    assert do_recheck_console_session(session.pk)[0] == SessionEnd.VM_MOVED
    VM.objects.filter(pk=vm.pk).update(status=VMStatus.STOPPING, desired_state=DesiredState.STOPPED)
    assert do_recheck_console_session(session.pk)[0] == SessionEnd.VM_STOPPED


def test_portal_console_tab(client, alice, bob, charlie, alice_project, host, settings):
    from django_otp import DEVICE_ID_SESSION_KEY  # noqa: F401  (the portal's login is the real one)

    settings.UNCLOUD_CONSOLE_BIND = "127.0.0.1:8123"
    vm = running_vm(alice, alice_project, host)
    for user, expected in ((alice, 200), (bob, 200), (charlie, 404)):
        client.force_login(user)
        page = client.get(f"/vms/{vm.uuid}/console/")
        assert page.status_code == expected, user
    client.force_login(alice)
    page = client.get(f"/vms/{vm.uuid}/console/?kind=serial")
    assert b"vendor/xterm/lib/xterm.js" in page.content
    policy = page["Content-Security-Policy"]
    connect = next(part for part in policy.split("; ") if part.startswith("connect-src"))
    assert connect == "connect-src 'self' ws://testserver:8123"
    # Only the console page talks to the gateway.
    assert "8123" not in client.get(f"/vms/{vm.uuid}/")["Content-Security-Policy"]
    # A ticket through the portal's login session, bound to that session.
    client.get("/")  # the CSRF cookie
    answer = client.post(f"/api/v1/vms/{vm.uuid}/console/", {"kind": "serial"}, content_type="application/json")
    assert answer.status_code == 201
    session_key = client.session.session_key
    assert ConsoleTicket.objects.get().session_key == session_key
    opened, _ = do_open_console_session(ticket_of(answer), str(vm.uuid), "serial")
    assert do_recheck_console_session(opened.pk) is None
    client.logout()
    assert do_recheck_console_session(opened.pk)[0] == SessionEnd.CREDENTIAL_GONE


def test_staff_end_a_session_from_the_admin(staff_client, staff, api, alice, alice_project, host):  # noqa: F811
    vm = running_vm(alice, alice_project, host)
    session, _ = do_open_console_session(ticket_of(post_console(api["alice"], vm)), str(vm.uuid), "vnc")
    listing = staff_client.get("/admin/consoles/consolesession/")
    assert listing.status_code == 200 and b"web1" in listing.content
    answer = staff_client.post("/admin/consoles/consolesession/",
                               {"action": "end_sessions", "_selected_action": [str(session.pk)]})
    assert answer.status_code == 302
    # What the gateway's next re-check answers: it closes the socket with this reason.
    assert do_recheck_console_session(session.pk) == (SessionEnd.STAFF_ENDED, "Ended by staff")
    assert AuditEntry.objects.get(action="console.close").actor == staff
