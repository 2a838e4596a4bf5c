#!/usr/bin/env python3
"""Benchmark: the browser console. A one-host lab, the demo guest under TCG, the real web app
(gunicorn), Celery worker and console gateway (`manage.py console_gateway`), Debian's Chromium.

    click to first frame   the VM page's "Console" tab clicked -> the noVNC canvas shows the guest
                           (the page's script notes the first non-black pixels), in the browser
    serial echo            one keystroke sent to the gateway's serial WebSocket -> the guest's echo
                           of it back (gateway, SSH channel, host pipe, qemu, guest tty and back)

Baselines measured in the same run: loading the VM page itself (the browser and web app alone),
the same keystroke echo on qemu's serial socket directly on the host (no gateway, no SSH: what the
guest and qemu cost), and a raw local TCP round trip (what a socket costs on this machine).

    sudo .venv/bin/python bench/console.py                 # 10 clicks, 200 keystrokes
    sudo .venv/bin/python bench/console.py --clicks 20 --keys 500
    BENCH_CONSOLE_LOG=1 ...                                # plus the gateway's log (per-session timings)
"""

import argparse
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

from controlplane import REPO, BenchControlPlane, LabUnavailable, api_client, bench_customer, percentile

PASSWORD = "bench-password-1"
# The console page's own milestones (ms since its navigation began), noted by static/portal/console.js.
MILESTONES = {"scriptMs": "page loaded, script runs", "ticketMs": "ticket answered (API)",
              "openMs": "gateway WebSocket open (ticket spent, SSH channel, host pipe)",
              "connectedMs": "VNC connected (RFB handshake, password)", "firstFrameMs": "first lit pixels"}
milestones: dict[str, list[float]] = {}
CHROMIUM = os.environ.get("UNCLOUD_CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} ended with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on {port}")


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(what)


def summary(name: str, values_ms: list[float]) -> str:
    return (f"{name:<44} n={len(values_ms):<4} p50={percentile(values_ms, 0.5):8.2f} ms  "
            f"p95={percentile(values_ms, 0.95):8.2f} ms  min={min(values_ms):8.2f} ms")


def tcp_round_trips(count: int) -> list[float]:
    """A local TCP echo (a thread answering one byte with that byte), timed per byte."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo():
        connection, _ = server.accept()
        with connection:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := connection.recv(1):
                connection.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    client = socket.create_connection(("127.0.0.1", port))
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        client.sendall(b"x")
        client.recv(1)
        times.append((time.perf_counter() - started) * 1000)
    client.close()
    server.close()
    return times


def keystroke_echoes(send, receive, drain, count: int) -> list[float]:
    """Type "x" count times, timing each keystroke until the guest's shell echoes it; every 50 keys
    the line is killed (Ctrl-U, not timed) so it never grows long."""
    times = []
    for index in range(count):
        if index and index % 50 == 0:
            send(b"\x15")
            drain()
        started = time.perf_counter()
        send(b"x")
        seen = b""
        while b"x" not in seen:
            seen += receive()
        times.append((time.perf_counter() - started) * 1000)
    send(b"\x15")
    drain()
    return times


def direct_serial_echoes(tty_path: str, count: int) -> list[float]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(tty_path)

        def drain():
            time.sleep(0.3)
            connection.settimeout(0.2)
            try:
                while connection.recv(65536):
                    pass
            except TimeoutError:
                pass
            connection.settimeout(30)

        connection.sendall(b"\r")
        drain()
        return keystroke_echoes(connection.sendall, lambda: connection.recv(65536), drain, count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clicks", type=int, default=10, help="Console tab clicks (click to first frame)")
    parser.add_argument("--keys", type=int, default=200, help="keystrokes (serial echo)")
    args = parser.parse_args()
    try:
        with BenchControlPlane("console", n_hosts=1) as plane:
            return run(plane, args)
    except LabUnavailable as reason:
        print(f"lab unavailable: {reason}", file=sys.stderr)
        return 2


def run(plane, args) -> int:
    web_port, gateway_port = free_port(), free_port()
    site = f"http://localhost:{web_port}"
    plane.configure(SECRET_KEY="bench-console-" + "k" * 40, SITE_URL=site, ALLOWED_HOSTS="localhost,127.0.0.1,testserver",
                    UNCLOUD_CONSOLE_BIND=f"localhost:{gateway_port}", UNCLOUD_CONSOLE_ALLOWED_ORIGINS=site,
                    UNCLOUD_CONSOLE_SESSIONS_PER_USER=100, UNCLOUD_CONSOLE_SESSIONS_PER_VM=100,
                    **({"LOG_LEVEL": "INFO"} if os.environ.get("BENCH_CONSOLE_LOG") else {}))
    from django.core.management import call_command

    from tests.lab.controlplane import demo_image, public_network, register_lab_hosts, serial_log
    from vms.actions import do_create_vm
    from vms.models import VM

    call_command("collectstatic", interactive=False, verbosity=0)
    plane.worker(concurrency=2)
    gateway = plane._spawn("console", [sys.executable, "manage.py", "console_gateway"])
    plane.on_exit(lambda: print("gateway log:\n" + (plane.workdir / "console-1.log").read_text()[-3000:],
                                file=sys.stderr) if os.environ.get("BENCH_CONSOLE_LOG") else None)
    web = plane._spawn("web", [str(Path(sys.executable).parent / "gunicorn"), "uncloud_project.wsgi",
                               "--bind", f"127.0.0.1:{web_port}", "--workers", "2", "--log-level", "warning"])
    wait_for_port(gateway_port, gateway, "console gateway")
    wait_for_port(web_port, web, "web")
    register_lab_hosts(plane.lab, [plane.lab.hosts[0]])
    public_network()
    user, project = bench_customer("console")
    user.set_password(PASSWORD)
    user.save()
    vm, _ = do_create_vm(user, project, name="console", cores=1, memory_mib=256, disk_mib=1024, image=demo_image())
    wait(lambda: VM.objects.get(pk=vm.pk).status == "running", 600, "the VM did not run")
    vm.refresh_from_db()
    wait(lambda: "UNCLOUD-READY" in serial_log(vm), 600, "the guest did not boot")
    print(f"machine: {os.cpu_count()} cores, TCG guest; web {site}, gateway ws://localhost:{gateway_port}",
          file=sys.stderr)

    figures = {}
    figures["tcp"] = tcp_round_trips(args.keys)
    page_loads, first_frames = browser_clicks(site, vm, user.username, args.clicks)
    figures["page"], figures["frame"] = page_loads, first_frames
    figures["gateway"] = gateway_serial_echoes(site, gateway_port, user, vm, args.keys)
    tty_path = str(Path(vm.host.state_dir) / "vms" / str(vm.uuid) / "tty.sock")
    wait(lambda: not _serial_open(vm), 30, "the gateway's serial session did not end")
    figures["direct"] = direct_serial_echoes(tty_path, args.keys)

    print()
    print("click Console -> first VNC frame (browser)")
    print("  " + summary("uncloud: click -> first frame", figures["frame"]))
    print("  " + summary("baseline: the VM page's own load", figures["page"]))
    print(f"  ratio at p50: {percentile(figures['frame'], .5) / percentile(figures['page'], .5):.1f}x the page load")
    print("  where the time goes (p50, ms since the console page's navigation began):")
    for name, what in MILESTONES.items():
        print(f"    {percentile(milestones[name], .5):8.0f}  {what}")
    print("serial keystroke -> echo")
    print("  " + summary("uncloud: through the gateway (WebSocket)", figures["gateway"]))
    print("  " + summary("baseline: qemu's serial socket on the host", figures["direct"]))
    print("  " + summary("baseline: raw local TCP round trip", figures["tcp"]))
    overhead = statistics.median(figures["gateway"]) - statistics.median(figures["direct"])
    print(f"  the gateway's share at p50: {overhead:.2f} ms (WebSocket, SSH channel, host pipe)")
    return 0


def _serial_open(vm) -> bool:
    from consoles.models import ConsoleSession

    return ConsoleSession.objects.filter(vm=vm, kind="serial", ended__isnull=True).exists()


def browser_clicks(site: str, vm, username: str, clicks: int) -> tuple[list[float], list[float]]:
    from playwright.sync_api import sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's loop in this thread; the ORM is not used here
    page_loads, first_frames = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_context(base_url=site, viewport={"width": 1280, "height": 900}).new_page()
        page.set_default_timeout(60_000)
        page.goto("/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", PASSWORD)
        page.click("main button[type=submit]")
        page.wait_for_url(lambda url: "/login/" not in url)
        for index in range(clicks + 1):  # the first one warms up (imports, SSH channel): not counted
            started = time.perf_counter()
            page.goto(f"/vms/{vm.uuid}/")
            page.wait_for_selector("#vm-console-tab")
            loaded = time.perf_counter()
            page.click("#vm-console-tab")
            page.wait_for_selector("#console[data-first-frame-ms]")
            framed = time.perf_counter()
            if index:
                page_loads.append((loaded - started) * 1000)
                first_frames.append((framed - loaded) * 1000)
                marks = page.evaluate("() => ({...document.getElementById('console').dataset})")
                for name in MILESTONES:
                    milestones.setdefault(name, []).append(float(marks[name]))
                print(f"click {index}: page {page_loads[-1]:.0f} ms, first frame {first_frames[-1]:.0f} ms",
                      file=sys.stderr)
        browser.close()
    return page_loads, first_frames


def gateway_serial_echoes(site: str, port: int, user, vm, count: int) -> list[float]:
    from urllib.parse import urlsplit

    from websockets.sync.client import connect

    answer = api_client(user).post(f"/api/v1/vms/{vm.uuid}/console/", {"kind": "serial"}, format="json")
    parts = urlsplit(answer.json()["url"])
    with connect(f"ws://127.0.0.1:{port}{parts.path}?{parts.query}", origin=site, compression=None) as websocket:
        def drain():
            time.sleep(0.3)
            try:
                while websocket.recv(timeout=0.2):
                    pass
            except TimeoutError:
                pass

        websocket.send(b"\r")
        drain()
        return keystroke_echoes(websocket.send, lambda: websocket.recv(timeout=30), drain, count)


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
