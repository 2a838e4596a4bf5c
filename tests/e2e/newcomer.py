"""What a new user does over HTTP, with nothing but the standard library: log in to the portal,
turn on the second factor with the key the page shows, make an API token on the token page, then
use the API. Used by the default-path test (and handy against a running bin/run:
`python -m tests.e2e.newcomer http://127.0.0.1:8000 demo PASSWORD` prints a token)."""

import base64
import hashlib
import hmac
import html
import http.cookiejar
import json
import re
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def totp(secret_base32: str, at: float | None = None, step: int = 30, digits: int = 6) -> str:
    """RFC 6238 code of a base32 key (what an authenticator app computes from the key or QR code)."""
    key = base64.b32decode(secret_base32.replace(" ", "").upper() + "=" * (-len(secret_base32.replace(" ", "")) % 8))
    counter = int((time.time() if at is None else at) // step)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = (struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 10**digits
    return str(value).zfill(digits)


class Newcomer:
    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))
        self.token = None

    # --- the portal ---------------------------------------------------------------------------

    def page(self, path: str, form: dict | None = None) -> tuple[int, str, str]:
        """(status, final URL, body) of a GET, or of a POST of `form` with the page's CSRF token."""
        data = None
        headers = {}
        if form is not None:
            csrf = next((cookie.value for cookie in self.cookies if cookie.name == "csrftoken"), None)
            if csrf is None:
                self.page(path)
                csrf = next(cookie.value for cookie in self.cookies if cookie.name == "csrftoken")
            data = urllib.parse.urlencode({"csrfmiddlewaretoken": csrf, **form}).encode()
            headers = {"Referer": self.base_url + path}
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers)
        try:
            with self.opener.open(request, timeout=60) as response:
                return response.status, response.url, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.url, error.read().decode()

    def log_in(self, username: str, password: str) -> None:
        self.page("/login/")
        status, url, body = self.page("/login/", {"username": username, "password": password})
        assert status == 200 and "/login/" not in url, f"login failed ({status} {url}): {body[:500]}"

    def turn_on_second_factor(self) -> str:
        """Enrol TOTP with the key the enrolment page shows; return that key."""
        status, _, body = self.page("/account/otp/")
        assert status == 200, body[:500]
        found = re.search(r'id="otp-secret">([A-Z2-7 ]+)<', body)
        assert found, f"no key on the enrolment page: {body[:2000]}"
        secret = found.group(1).replace(" ", "")
        status, _, body = self.page("/account/otp/", {"step": "confirm", "code": totp(secret)})
        assert status == 200 and "Two-factor authentication is on" in body, body[:2000]
        return secret

    def make_token(self, name: str) -> str:
        status, _, body = self.page("/account/tokens/", {"name": name, "scope": "read_write", "expires_in_days": ""})
        found = re.search(r'<pre id="new-token">([^<]+)</pre>', body)
        assert status == 200 and found, f"no token shown ({status}): {body[:2000]}"
        self.token = html.unescape(found.group(1)).strip()
        return self.token

    # --- the API (as the README's curl lines) -------------------------------------------------

    def api(self, method: str, path: str, body: dict | None = None, headers: dict | None = None):
        """(status, JSON answer) of an API call with the token."""
        request = urllib.request.Request(
            f"{self.base_url}/api/v1/{path.lstrip('/')}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                return error.code, json.loads(raw)
            except ValueError:
                return error.code, raw.decode(errors="replace")


if __name__ == "__main__":
    base_url, username, password = sys.argv[1:4]
    newcomer = Newcomer(base_url)
    newcomer.log_in(username, password)
    newcomer.turn_on_second_factor()
    print(newcomer.make_token("laptop"))
