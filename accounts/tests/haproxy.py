"""A real HAProxy in front of a live test server, as a hoster deploys uncloud behind a reverse proxy.

It listens on a loopback port of its own and connects to the app from 127.0.0.9 (`source`), so the
app can tell the proxy apart from clients that connect directly (from 127.0.0.2, 127.0.0.3, ...;
Linux answers on all of 127.0.0.0/8). `option forwardfor` appends the client's address to
X-Forwarded-For, as production proxies do.
"""

import shutil
import socket
import subprocess
from pathlib import Path

from tests.lab.waiting import wait_until_listening

PROXY_SOURCE = "127.0.0.9"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HAProxy:
    def __init__(self, workdir: Path, backend_host: str, backend_port: int):
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            raise RuntimeError("haproxy is not installed (bin/test installs the Debian package haproxy)")
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.config = workdir / "haproxy.cfg"
        self.config.write_text(
            "global\n  maxconn 200\n"
            "defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n"
            f"frontend web\n  bind 127.0.0.1:{self.port}\n  option forwardfor\n  default_backend app\n"
            f"backend app\n  server app {backend_host}:{backend_port} source {PROXY_SOURCE}\n"
        )
        self.process = None

    def start(self) -> None:
        subprocess.run([self.binary, "-c", "-f", str(self.config)], check=True, capture_output=True)
        # -db: foreground, so we own the pid and stop it ourselves.
        self.process = subprocess.Popen([self.binary, "-db", "-f", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until_listening(self.process, self.port, "haproxy")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
