"""Issue 23.2: the login limiter behind a real reverse proxy (HAProxy in front of a live server)."""

import http.client
import re
from urllib.parse import urlencode, urlsplit

import pytest

from accounts.tests.haproxy import PROXY_SOURCE, HAProxy


@pytest.fixture
def proxy(live_server, tmp_path):
    backend = urlsplit(live_server.url)
    server = HAProxy(tmp_path, backend.hostname, backend.port)
    server.start()
    yield server
    server.stop()


class Browser:
    """A client with its own source address and cookies: one person on the internet."""

    def __init__(self, host: str, port: int, source: str):
        self.host, self.port, self.source = host, port, source
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30, source_address=(self.source, 0))
        sent = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()), **(headers or {})}
        data = None
        if body is not None:
            data = urlencode(body)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        content = response.read()
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";")[0]
        connection.close()
        return response.status, content

    def log_in(self, username: str, password: str, headers: dict | None = None):
        _, page = self.request("GET", "/login/", headers=headers)
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
        return self.request("POST", "/login/", {"csrfmiddlewaretoken": token, "username": username,
                                                "password": password}, headers=headers)


def test_one_guesser_behind_the_proxy_does_not_lock_out_everyone(proxy, alice, charlie, settings):
    settings.UNCLOUD_TRUSTED_PROXIES = [PROXY_SOURCE]
    settings.UNCLOUD_LOGIN_FAILURES_PER_ADDRESS = 30
    guesser = Browser("127.0.0.1", proxy.port, "127.0.0.2")
    for number in range(30):
        status, content = guesser.log_in(f"victim{number}", "guess")
        assert status == 200 and b"did not match" in content
    status, content = guesser.log_in("charlie", "charlie-password-1")
    assert status == 200 and b"Too many failed attempts" in content  # the guesser's own address is stopped
    # Everyone else behind the same proxy still logs in.
    status, _ = Browser("127.0.0.1", proxy.port, "127.0.0.3").log_in("alice", "alice-password-1")
    assert status == 302


def test_a_forged_forwarded_header_does_not_escape_the_limit(proxy, live_server, alice, settings):
    settings.UNCLOUD_TRUSTED_PROXIES = [PROXY_SOURCE]
    settings.UNCLOUD_LOGIN_FAILURES_PER_ADDRESS = 5
    guesser = Browser("127.0.0.1", proxy.port, "127.0.0.2")
    for number in range(5):
        # A new made-up address each time: HAProxy appends the real one, which is what counts.
        guesser.log_in(f"victim{number}", "guess", headers={"X-Forwarded-For": f"198.51.100.{number}"})
    status, content = guesser.log_in("alice", "alice-password-1", headers={"X-Forwarded-For": "198.51.100.99"})
    assert b"Too many failed attempts" in content
    # Straight to the app, bypassing the proxy: the header of a client that is no proxy is not believed.
    backend = urlsplit(live_server.url)
    direct = Browser(backend.hostname, backend.port, "127.0.0.4")
    for number in range(5):
        direct.log_in(f"victim{number}", "guess", headers={"X-Forwarded-For": f"203.0.113.{number}"})
    status, content = direct.log_in("alice", "alice-password-1", headers={"X-Forwarded-For": "203.0.113.99"})
    assert b"Too many failed attempts" in content
