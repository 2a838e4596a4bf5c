"""The console gateway: a WebSocket server (asyncio, the `websockets` library) between browsers and
the VMs' console sockets on their hosts. `manage.py console_gateway` runs it.

A connection is /<anything>/<vm uuid>/<vnc|serial>/?ticket=... from a page of an allowed origin.
Before the upgrade the gateway spends the ticket (actions.do_open_console_session: single use, this
VM and kind, the user may still open it, the caps) and opens the host program's console-pipe on a
channel of the one SSH connection it keeps per host; a refusal is an HTTP status, never a socket.
Then it relays bytes both ways until either side ends, the user is idle, the maximum duration is
reached, or a re-check every few seconds finds the VM stopped, moved or deleted, or the user's
access or credential gone. Every session is a ConsoleSession row, ended with its reason.

The ORM runs in worker threads (asyncio.to_thread), and so does the SSH channel (paramiko blocks).
"""

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.db import close_old_connections
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from agents.hostagent import HostError
from agents.hosts import agent_for
from agents.models import Host
from agents.transport import TransportError
from consoles import actions
from consoles.choices import ConsoleKind, SessionEnd
from consoles.urls_of import allowed_origins

log = logging.getLogger("uncloud.console")

# The one-time VNC password is good for this long: noVNC authenticates right after the upgrade.
VNC_PASSWORD_VALID_S = 10
MAX_MESSAGE_BYTES = 1024 * 1024
JANITOR_INTERVAL_S = 30
# WebSocket close codes: 1000 the user closed it; 4000 + n our reasons (the text says which).
CLOSE_CODES = {reason: 4000 + index for index, reason in enumerate(SessionEnd.values)}


async def in_thread(function, *args, **kwargs):
    """An ORM call off the event loop, on a connection that is usable (the database may have restarted)."""
    def run():
        close_old_connections()
        try:
            return function(*args, **kwargs)
        finally:
            close_old_connections()
    return await asyncio.to_thread(run)


class SparePipes:
    """One console-pipe per host started ahead of need (HostAgent.start_console_pipe): a click
    then waits for the spec line's round trip, not for an SSH exec and a Python start. Each is a
    channel of the gateway's one SSH connection to that host and a small idle process there; it
    ends by itself when the connection does."""

    def __init__(self):
        self._spares = {}
        self._lock = threading.Lock()

    def take(self, key):
        with self._lock:
            return self._spares.pop(key, None)

    def refill(self, key, agent) -> None:
        with self._lock:
            if key in self._spares:
                return
        try:
            stream = agent.start_console_pipe()
        except (HostError, TransportError) as error:
            log.info("no spare console pipe for %s: %s", key[0].name, error)
            return
        with self._lock:
            if self._spares.setdefault(key, stream) is not stream:
                stream.close()

    def close_all(self) -> None:
        with self._lock:
            spares, self._spares = list(self._spares.values()), {}
        for stream in spares:
            stream.close()


SPARE_PIPES = SparePipes()


def open_host_channel(session, vnc_password):
    host = Host.objects.get(pk=session.host_id)
    agent = agent_for(host)
    key = (agent.connection, agent.state_dir)
    spare = SPARE_PIPES.take(key)
    arguments = {"vnc_password": vnc_password, "password_valid_s": VNC_PASSWORD_VALID_S}
    try:
        if spare is not None:
            try:
                return agent.open_console(str(session.vm_uuid), session.kind, stream=spare, **arguments)
            except TransportError:
                log.info("the spare console pipe for %s had ended; starting one", host.name)
        return agent.open_console(str(session.vm_uuid), session.kind, **arguments)
    finally:
        threading.Thread(target=SPARE_PIPES.refill, args=(key, agent), daemon=True).start()


def parse_console_path(path: str):
    """(vm uuid, kind, ticket) from /<prefix...>/<vm uuid>/<kind>/?ticket=..., or None."""
    parts = urlsplit(path)
    segments = [segment for segment in parts.path.split("/") if segment]
    if len(segments) < 2 or segments[-1] not in ConsoleKind.values:
        return None
    ticket = parse_qs(parts.query).get("ticket", [""])[0]
    return segments[-2], segments[-1], ticket


class Relay:
    """One open console session: the bytes both ways and the reasons to end it."""

    def __init__(self, websocket, session, stream):
        self.websocket, self.session, self.stream = websocket, session, stream
        self.bytes_to_client = self.bytes_from_client = 0
        self.last_traffic = self.started = time.monotonic()
        self.stop_requested = asyncio.Event()
        self.stop_reason = (SessionEnd.GATEWAY_STOPPED, "The console gateway is stopping.")
        self._reader_stop = threading.Event()

    def stop(self, reason, message):
        self.stop_reason = (reason, message)
        self.stop_requested.set()

    def _read_host(self, loop, incoming):
        while not self._reader_stop.is_set():
            data = self.stream.receive_bytes(0.5)
            if data is None:
                continue
            loop.call_soon_threadsafe(incoming.put_nowait, data)
            if data == b"":
                return

    async def host_to_client(self, incoming):
        while True:
            data = await incoming.get()
            if data == b"":
                return SessionEnd.CONSOLE_CLOSED, "The VM's console closed."
            self.bytes_to_client += len(data)
            self.last_traffic = time.monotonic()
            try:
                await self.websocket.send(data)
            except ConnectionClosed:
                return SessionEnd.CLIENT_CLOSED, ""

    async def client_to_host(self):
        try:
            async for message in self.websocket:
                data = message.encode() if isinstance(message, str) else message
                self.bytes_from_client += len(data)
                self.last_traffic = time.monotonic()
                try:
                    await asyncio.to_thread(self.stream.send_bytes, data)
                except TransportError:
                    return SessionEnd.CONSOLE_CLOSED, "The VM's console closed."
        except ConnectionClosed:
            pass
        return SessionEnd.CLIENT_CLOSED, ""

    async def watch(self):
        """Idle (no bytes either way: a still screen sends nothing), too long, or no longer allowed."""
        while True:
            await asyncio.sleep(settings.UNCLOUD_CONSOLE_RECHECK_SECONDS)
            now = time.monotonic()
            if now - self.started >= settings.UNCLOUD_CONSOLE_MAX_SECONDS:
                return SessionEnd.MAX_DURATION, "The console reached its maximum duration."
            if now - self.last_traffic >= settings.UNCLOUD_CONSOLE_IDLE_SECONDS:
                return SessionEnd.IDLE, "The console was idle for too long."
            try:
                refusal = await in_thread(actions.do_recheck_console_session, self.session.pk)
            except Exception:  # the database is away for a moment: keep the console, check again
                log.exception("console %s: re-check failed", self.session.uuid)
                continue
            if refusal is not None:
                return refusal

    async def stopped(self):
        await self.stop_requested.wait()
        return self.stop_reason

    async def run(self):
        loop = asyncio.get_running_loop()
        incoming = asyncio.Queue()
        reader = threading.Thread(target=self._read_host, args=(loop, incoming), daemon=True,
                                  name=f"console-{self.session.pk}")
        reader.start()
        tasks = [asyncio.create_task(coroutine) for coroutine in (
            self.host_to_client(incoming), self.client_to_host(), self.watch(), self.stopped())]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            reason, message = next(iter(done)).result()
        finally:
            for task in tasks:
                task.cancel()
            self._reader_stop.set()
            await asyncio.to_thread(self.stream.close)
        # The audit row first: when the browser learns the session ended, the record says so already.
        await in_thread(actions.do_end_console_session, self.session.pk, reason,
                        bytes_to_client=self.bytes_to_client, bytes_from_client=self.bytes_from_client)
        code = 1000 if reason == SessionEnd.CLIENT_CLOSED else CLOSE_CODES[reason]
        await self.websocket.close(code, (message or SessionEnd(reason).label)[:120])
        log.info("console %s of %s by %s ended: %s (%d bytes out, %d in)", self.session.kind,
                 self.session.vm_name, self.session.user_id, reason, self.bytes_to_client, self.bytes_from_client)
        return reason


class Gateway:
    def __init__(self, bind: str):
        host, _, port = bind.rpartition(":")
        self.host, self.port = host.strip("[]") or "127.0.0.1", int(port)
        self.name = f"{socket.gethostname()}:{self.port}:{os.getpid()}"
        self.relays: set[Relay] = set()
        self.origins = set(allowed_origins())

    async def process_request(self, connection, request):
        origin = request.headers.get("Origin", "")
        if origin.rstrip("/") not in self.origins:
            return connection.respond(HTTPStatus.FORBIDDEN, "This origin may not open consoles.\n")
        parsed = parse_console_path(request.path)
        if parsed is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not a console URL.\n")
        vm_uuid, kind, ticket = parsed
        client_address = str(connection.remote_address[0]) if connection.remote_address else ""
        started = time.perf_counter()
        try:
            session, vnc_password = await in_thread(
                actions.do_open_console_session, ticket, vm_uuid, kind, client_address=client_address,
                gateway=self.name)
        except actions.ConsoleRefused as refused:
            log.info("console refused (%s): %s", refused.status, refused.message)
            return connection.respond(refused.status, refused.message + "\n")
        checked = time.perf_counter()
        try:
            stream = await in_thread(open_host_channel, session, vnc_password)
        except (HostError, TransportError) as error:
            log.warning("console %s: host unreachable: %s", session.uuid, error)
            await in_thread(actions.do_end_console_session, session.pk, SessionEnd.HOST_UNREACHABLE)
            return connection.respond(HTTPStatus.BAD_GATEWAY, "The VM's host could not be reached.\n")
        log.info("console %s of %s by %s opened: ticket and checks %.0f ms, host channel %.0f ms", kind,
                 session.vm_name, session.user_id, (checked - started) * 1000, (time.perf_counter() - checked) * 1000)
        connection.console = (session, stream)
        return None

    async def handler(self, websocket):
        session, stream = websocket.console
        relay = Relay(websocket, session, stream)
        self.relays.add(relay)
        try:
            await relay.run()
        finally:
            self.relays.discard(relay)

    async def janitor(self):
        while True:
            try:
                ended = await in_thread(actions.do_end_stale_console_sessions)
                if ended:
                    log.info("ended %d console sessions whose gateway vanished", ended)
            except Exception:
                log.exception("console janitor failed")
            await asyncio.sleep(JANITOR_INTERVAL_S)

    async def serve(self, ready=None):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        janitor = asyncio.create_task(self.janitor())
        async with serve(self.handler, self.host, self.port, process_request=self.process_request,
                         compression=None, max_size=MAX_MESSAGE_BYTES) as server:
            log.info("console gateway %s listening on %s:%d for origins %s", self.name, self.host, self.port,
                     ", ".join(sorted(self.origins)))
            if ready is not None:
                ready()
            await stop.wait()
            log.info("console gateway stopping: ending %d sessions", len(self.relays))
            for relay in list(self.relays):
                relay.stop(SessionEnd.GATEWAY_STOPPED, "The console gateway is stopping.")
            while self.relays:
                await asyncio.sleep(0.05)
            server.close()
        janitor.cancel()
        SPARE_PIPES.close_all()
