"""The browser console end to end: real Chromium, the real console gateway (`manage.py
console_gateway`), the lab host over SSH, the demo guest under TCG.

VNC: the guest's text console is drawn (screenshot, canvas not blank), typed text reaches the guest,
Ctrl-Alt-Del reaches it too. Serial: a command typed into xterm.js is answered by the guest's shell.
Tickets through the gateway: used, expired, another VM, a foreign origin are refused; charlie gets
none; bob's is honoured; the CLI's serial attach works; the gateway's session cap holds; removing bob closes his open sessions.
"""

import contextlib
import os
import select
import socket
import subprocess
import sys
import time
import uuid
from urllib.parse import urlsplit

import pytest
from django.utils import timezone
from playwright.sync_api import expect
from rest_framework.test import APIClient
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from accounts.actions import do_create_token, do_remove_member
from consoles.choices import SessionEnd
from consoles.gateway import CLOSE_CODES
from consoles.models import ConsoleSession
from tests.browser.conftest import log_in
from tests.lab.controlplane import (
    apply_lab_settings,
    demo_image,
    lab_settings,
    public_network,
    register_lab_hosts,
    serial_log,
    wait_for_status,
)
from tests.lab.waiting import wait_for, wait_until_listening
from vms.actions import do_create_vm

pytestmark = pytest.mark.lab
BOOT_TIMEOUT_S = 300  # TCG on a machine shared with other test runs
GATEWAY_CAP_PER_USER = 2

CANVAS_PIXELS = """() => {
  const canvas = document.querySelector('#console-screen canvas');
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let lit = 0;
  for (let index = 0; index < data.length; index += 4) if (data[index] || data[index + 1] || data[index + 2]) lit++;
  return {lit: lit, width: canvas.width, height: canvas.height};
}"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def console_stack(lab, celery_processes, live_server, settings):
    port = free_port()
    values = lab_settings(lab)
    apply_lab_settings(settings, values)
    settings.UNCLOUD_CONSOLE_BIND = f"localhost:{port}"
    # This process hands out tickets freely; the gateway's own settings are the caps under test.
    settings.UNCLOUD_CONSOLE_SESSIONS_PER_USER = settings.UNCLOUD_CONSOLE_SESSIONS_PER_VM = 50
    # The same SECRET_KEY as the web process: the one-time VNC password is derived from the ticket with it.
    processes = celery_processes(**values, SECRET_KEY=settings.SECRET_KEY,
                                 UNCLOUD_CONSOLE_ALLOWED_ORIGINS=live_server.url,
                                 UNCLOUD_CONSOLE_RECHECK_SECONDS=1,
                                 UNCLOUD_CONSOLE_SESSIONS_PER_USER=GATEWAY_CAP_PER_USER,
                                 UNCLOUD_CONSOLE_SESSIONS_PER_VM=10)
    processes.worker()
    gateway = processes.console_gateway(f"localhost:{port}")
    wait_until_listening(gateway, port, "console gateway", timeout=30)
    register_lab_hosts(lab, [lab.hosts[0]])
    public_network()
    return processes, port


class Tickets:
    """Tickets through the API (a token, like a script) and WebSockets to the gateway (like a browser)."""

    def __init__(self, port, origin, vm):
        self.port, self.origin, self.vm = port, origin, vm

    def url(self, user, kind="vnc"):
        _, raw = do_create_token(user, f"console-{uuid.uuid4().hex[:6]}")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        answer = client.post(f"/api/v1/vms/{self.vm.uuid}/console/", {"kind": kind}, format="json")
        assert answer.status_code == 201, answer.json()
        parts = urlsplit(answer.json()["url"])
        return f"ws://127.0.0.1:{self.port}{parts.path}?{parts.query}"

    def open(self, url, origin=None):
        return connect(url, origin=origin or self.origin, open_timeout=30, compression=None)

    def refused(self, url, origin=None) -> tuple[int, str]:
        with pytest.raises(InvalidStatus) as refusal, self.open(url, origin):
            pass
        return refusal.value.response.status_code, refusal.value.response.body.decode()


def closed_with(websocket, timeout=15):
    """Read until the gateway closes the socket; its close code and reason."""
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as closed:
        while time.monotonic() < deadline:
            websocket.recv(timeout=max(0.1, deadline - time.monotonic()))
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_console_in_the_browser_and_its_tickets(console_stack, page, shot, live_server, alice, bob, charlie,
                                                alice_project, settings, tmp_path):
    processes, port = console_stack
    vm, _ = do_create_vm(alice, alice_project, name="web1", cores=1, memory_mib=256, disk_mib=1024,
                         image=demo_image())
    wait_for_status(vm, "running", processes, timeout=BOOT_TIMEOUT_S)
    wait_for(lambda: "UNCLOUD-READY" in serial_log(vm), timeout=BOOT_TIMEOUT_S,
             message=lambda: f"the guest did not boot:\n{serial_log(vm)[-2000:]}")

    # VNC in the browser: the guest's text console is drawn.
    log_in(page, "alice", "alice-password-1")
    page.goto(f"/vms/{vm.uuid}/")
    page.click("#vm-console-tab")
    console = page.locator("#console")
    expect(console).to_have_attribute("data-state", "connected", timeout=30_000)
    expect(console).to_have_attribute("data-first-frame-ms", __import__("re").compile(r"^\d+$"), timeout=30_000)
    page.wait_for_timeout(1000)  # the rest of the screen after the first lit pixels
    shot(page, "1-vnc")
    pixels = page.evaluate(CANVAS_PIXELS)
    assert pixels["width"] >= 640 and pixels["height"] >= 400, pixels
    assert pixels["lit"] > 500, f"the VNC canvas is blank: {pixels}"
    # Keystrokes reach the guest's shell on tty1 (it writes to the serial line, which we can read).
    page.fill("#console-paste", "echo vnc-typed-$((6*7)) > /dev/ttyS0\n")
    page.click("#console-paste-send")
    wait_for(lambda: "vnc-typed-42" in serial_log(vm), timeout=60,
             message=lambda: f"the typed line never reached the guest:\n{serial_log(vm)[-1000:]}")
    shot(page, "2-vnc-typed")
    page.click("#console-disconnect")
    expect(console).to_have_attribute("data-state", "closed")

    # Serial in the browser: type into xterm.js, read the shell's answer.
    page.goto(f"/vms/{vm.uuid}/console/?kind=serial")
    expect(console).to_have_attribute("data-state", "connected", timeout=30_000)
    page.click("#console-terminal")
    page.keyboard.type("echo serial-$((6*7))\n")
    expect(page.locator("#console-terminal .xterm-rows")).to_contain_text("serial-42", timeout=30_000)
    shot(page, "3-serial")
    page.goto(f"/vms/{vm.uuid}/")  # leaving the page ends the session
    wait_for(lambda: not ConsoleSession.objects.filter(ended__isnull=True).exists(), timeout=15,
             message="the browser's sessions did not end")
    assert set(ConsoleSession.objects.values_list("end_reason", flat=True)) == {SessionEnd.CLIENT_CLOSED}
    assert ConsoleSession.objects.filter(kind="serial").get().bytes_from_client >= len("echo serial-$((6*7))\n")

    # The CLI attaches a terminal (here: pipes) to the serial line through the same gateway.
    _, cli_token = do_create_token(alice, "cli")
    cli = subprocess.Popen([sys.executable, "-m", "uncloud_cli", "--url", live_server.url, "--token", cli_token,
                            "vms", "console", "web1", "--serial"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env={**os.environ, "UNCLOUD_CONFIG": str(tmp_path / "cli.json")})
    try:
        cli.stdin.write(b"echo cli-$((6*7))\r")
        cli.stdin.flush()
        seen = b""
        deadline = time.monotonic() + 60
        while b"cli-42" not in seen and time.monotonic() < deadline:
            if select.select([cli.stdout], [], [], 1)[0]:
                seen += os.read(cli.stdout.fileno(), 65536)
        assert b"cli-42" in seen, (seen, cli.poll() is not None and cli.stderr.read())
        cli.stdin.write(b"\x1d")  # Ctrl-] leaves
        cli.stdin.flush()
        assert cli.wait(timeout=15) == 0
        assert b"Serial console closed: left." in cli.stderr.read()
    finally:
        if cli.poll() is None:
            cli.kill()
    wait_for(lambda: not ConsoleSession.objects.filter(ended__isnull=True).exists(), timeout=15,
             message="the CLI's session did not end")

    tickets = Tickets(port, live_server.url, vm)
    # A foreign page may not open a console (the ticket stays unspent: the origin is checked first).
    url = tickets.url(alice, "serial")
    assert tickets.refused(url, origin="http://evil.example")[0] == 403
    with tickets.open(url):
        pass
    status, body = tickets.refused(url)
    assert status == 403 and "already used" in body
    another_vm = url.replace(str(vm.uuid), str(uuid.uuid4()))
    assert "already used" in tickets.refused(another_vm)[1]
    status, body = tickets.refused(tickets.url(alice, "serial").replace(str(vm.uuid), str(uuid.uuid4())))
    assert status == 403 and "another console" in body
    settings.UNCLOUD_CONSOLE_TICKET_SECONDS = 1
    late = tickets.url(alice)
    time.sleep(1.5)
    status, body = tickets.refused(late)
    assert status == 403 and "expired" in body
    settings.UNCLOUD_CONSOLE_TICKET_SECONDS = 15
    _, raw = do_create_token(charlie, "charlie")
    stranger = APIClient()
    stranger.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert stranger.post(f"/api/v1/vms/{vm.uuid}/console/", {"kind": "vnc"}, format="json").status_code == 404

    # bob (member) is let in, up to the gateway's cap; removing him from the project ends his sessions.
    opened = contextlib.ExitStack()
    bobs = [opened.enter_context(tickets.open(tickets.url(bob))) for _ in range(GATEWAY_CAP_PER_USER)]
    for websocket in bobs:
        assert websocket.recv(timeout=15).startswith(b"RFB 003.008")
    status, body = tickets.refused(tickets.url(bob))
    assert status == 409 and f"{GATEWAY_CAP_PER_USER} console sessions open" in body
    removed = time.monotonic()
    do_remove_member(alice, alice_project, bob)
    for websocket in bobs:
        code, reason = closed_with(websocket)
        assert code == CLOSE_CODES[SessionEnd.ACCESS_LOST], (code, reason)
    print(f"bob's sessions closed {time.monotonic() - removed:.1f} s after he was removed")
    opened.close()
    assert list(ConsoleSession.objects.filter(user=bob).values_list("end_reason", flat=True)) == \
        [SessionEnd.ACCESS_LOST] * GATEWAY_CAP_PER_USER

    # Ctrl-Alt-Del from the browser reaches the guest (busybox init powers off), which ends the console.
    page.goto(f"/vms/{vm.uuid}/console/")
    expect(console).to_have_attribute("data-state", "connected", timeout=30_000)
    page.click("#console-ctrl-alt-del")
    wait_for(lambda: "The system is going down" in serial_log(vm), timeout=60,
             message=lambda: f"Ctrl-Alt-Del did not reach the guest:\n{serial_log(vm)[-1000:]}")
    expect(console).to_have_attribute("data-state", "closed", timeout=30_000)
    shot(page, "4-after-ctrl-alt-del")
    wait_for(lambda: ConsoleSession.objects.filter(ended__isnull=True).count() == 0, timeout=15)
    last = ConsoleSession.objects.filter(user=alice).order_by("-started").first()
    assert last.end_reason in (SessionEnd.CONSOLE_CLOSED, SessionEnd.VM_STOPPED), last.end_reason
    assert last.ended <= timezone.now()
