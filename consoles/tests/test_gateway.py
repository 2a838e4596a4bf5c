"""The console gateway process (`manage.py console_gateway`) and the host program's console-pipe,
on this machine as a local-transport host, without booting a guest: what ends a session and how
the browser hears of it (close code and reason), and the audit row it leaves.

Stand-in: each "VM" is a unix socket at the path qemu's serial socket has, served by a thread that
echoes what it gets, plus a pid file. These tests are about the gateway's timers and re-checks, so
no qemu is needed; the lab test (tests/browser/test_console_lab.py) runs the real guest.
"""

import os
import shutil
import socket
import tempfile
import threading
import time
from urllib.parse import urlsplit

import pytest
from rest_framework.test import APIClient
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from accounts.actions import do_create_token, do_revoke_token
from consoles.choices import SessionEnd
from consoles.gateway import CLOSE_CODES
from consoles.models import ConsoleSession
from tests.lab.waiting import wait_until_listening
from vms.actions import do_create_vm
from vms.choices import DesiredState, VMStatus
from vms.models import VM
from vms.tests.test_actions import make_host

ORIGIN = "http://portal.example"
IDLE_S, MAX_S = 4, 9


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class EchoConsole:
    """A VM's serial socket that echoes (see the module's docstring)."""

    def __init__(self, state_dir: str, vm_uuid: str):
        directory = os.path.join(state_dir, "vms", vm_uuid)
        os.makedirs(directory)
        with open(os.path.join(directory, "qemu.pid"), "w") as pid_file:
            pid_file.write(str(os.getpid()))
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(os.path.join(directory, "tty.sock"))
        self.server.listen(4)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self.echo, args=(connection,), daemon=True).start()

    @staticmethod
    def echo(connection):
        with connection:
            while data := connection.recv(4096):
                connection.sendall(data)


@pytest.fixture
def local_gateway(celery_processes, settings):
    state_dir = tempfile.mkdtemp(prefix="uc-gw-", dir="/tmp")  # short: socket paths have a limit
    try:
        yield from _local_gateway(celery_processes, settings, state_dir)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def _local_gateway(celery_processes, settings, state_dir):
    port = free_port()
    settings.UNCLOUD_CONSOLE_BIND = f"127.0.0.1:{port}"
    settings.UNCLOUD_CONSOLE_SESSIONS_PER_USER = settings.UNCLOUD_CONSOLE_SESSIONS_PER_VM = 50
    processes = celery_processes(SECRET_KEY=settings.SECRET_KEY, UNCLOUD_CONSOLE_ALLOWED_ORIGINS=ORIGIN,
                                 UNCLOUD_CONSOLE_RECHECK_SECONDS=1, UNCLOUD_CONSOLE_IDLE_SECONDS=IDLE_S,
                                 UNCLOUD_CONSOLE_MAX_SECONDS=MAX_S, UNCLOUD_CONSOLE_SESSIONS_PER_USER=50)
    gateway = processes.console_gateway(f"127.0.0.1:{port}")
    wait_until_listening(gateway, port, "console gateway", timeout=60)
    host = make_host("local")  # the local transport: console-pipe runs here as a subprocess
    host.state_dir = state_dir
    host.save(update_fields=["state_dir"])
    yield processes, gateway, port, host


def running_vm(alice, project, host, name):
    vm, _ = do_create_vm(alice, project, name=name, cores=1, memory_mib=512, disk_mib=1024, start=False)
    VM.objects.filter(pk=vm.pk).update(status=VMStatus.RUNNING, desired_state=DesiredState.RUNNING, host=host)
    EchoConsole(host.state_dir, str(vm.uuid))
    return vm


def open_serial(port, client, vm):
    answer = client.post(f"/api/v1/vms/{vm.uuid}/console/", {"kind": "serial"}, format="json")
    assert answer.status_code == 201, answer.json()
    parts = urlsplit(answer.json()["url"])
    return connect(f"ws://127.0.0.1:{port}{parts.path}?{parts.query}", origin=ORIGIN, open_timeout=30)


def keep_typing(websocket):
    try:
        while True:
            websocket.send(b"x")
            time.sleep(0.5)
    except ConnectionClosed:
        pass


def closed_with(websocket, timeout=30):
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as closed:
        while time.monotonic() < deadline:
            try:
                websocket.recv(timeout=0.5)
            except TimeoutError:
                pass
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_what_ends_a_session_at_the_gateway(local_gateway, alice, alice_project):
    processes, gateway, port, host = local_gateway
    vms = {name: running_vm(alice, alice_project, host, name) for name in ("busy", "idle", "token", "stops", "last")}
    token, raw = do_create_token(alice, "console")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    # Before the sessions open: neither may end sooner than its limit after this, however long the
    # first echo takes on a loaded machine.
    started = time.monotonic()
    with open_serial(port, client, vms["busy"]) as busy, open_serial(port, client, vms["idle"]) as idle:
        busy.send(b"hello")
        assert busy.recv(timeout=15) == b"hello"  # through the gateway, the host program and back
        threading.Thread(target=keep_typing, args=(busy,), daemon=True).start()
        assert closed_with(idle) == (CLOSE_CODES[SessionEnd.IDLE], "The console was idle for too long.")
        assert IDLE_S <= time.monotonic() - started
        code, reason = closed_with(busy)  # typing does not keep it open for ever
        assert code == CLOSE_CODES[SessionEnd.MAX_DURATION], reason
        assert time.monotonic() - started >= MAX_S - 1

    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {do_create_token(alice, 'other')[1]}")
    with open_serial(port, client, vms["token"]) as revoked, open_serial(port, other, vms["stops"]) as stopping:
        do_revoke_token(alice, token)
        assert closed_with(revoked)[0] == CLOSE_CODES[SessionEnd.CREDENTIAL_GONE]
        VM.objects.filter(pk=vms["stops"].pk).update(status=VMStatus.STOPPING, desired_state=DesiredState.STOPPED)
        assert closed_with(stopping) == (CLOSE_CODES[SessionEnd.VM_STOPPED], "The VM is not running.")

    with open_serial(port, other, vms["last"]) as last:
        last.send(b"x")
        last.recv(timeout=15)
        os.killpg(gateway.pid, 15)  # the gateway stops: it ends its sessions first
        assert closed_with(last)[0] == CLOSE_CODES[SessionEnd.GATEWAY_STOPPED]
    gateway.wait(timeout=30)

    ends = dict(ConsoleSession.objects.values_list("vm_name", "end_reason"))
    assert ends == {"busy": SessionEnd.MAX_DURATION, "idle": SessionEnd.IDLE, "token": SessionEnd.CREDENTIAL_GONE,
                    "stops": SessionEnd.VM_STOPPED, "last": SessionEnd.GATEWAY_STOPPED}
    busy_row = ConsoleSession.objects.get(vm_name="busy")
    # Every byte typed came back, but one typed as the session ended may not have.
    assert busy_row.bytes_from_client >= busy_row.bytes_to_client >= len(b"hello")
    assert busy_row.bytes_from_client - busy_row.bytes_to_client <= len(b"x")
    assert not ConsoleSession.objects.filter(ended__isnull=True).exists()
