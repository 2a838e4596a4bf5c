"""`uncloud login`: password and one-time code, then a new API token.

The API creates tokens only for a request that passed the second factor. The CLI logs in the way
the portal does (the same login and one-time-code forms, with their CSRF protection and login
limits), then asks the API for a token with that session: a password never reaches an API endpoint
that would accept it without the second factor."""

import re

import httpx

from uncloud_cli.api import error_text
from uncloud_cli.errors import EXIT_API, EXIT_CONNECTION, CLIError


def _form_post(http: httpx.Client, path: str, fields: dict) -> httpx.Response:
    http.get(path)
    csrf = http.cookies.get("csrftoken")
    return http.post(path, data={**fields, "csrfmiddlewaretoken": csrf or ""},
                     headers={"Referer": str(http.base_url.join(path))})


def _form_error(response: httpx.Response) -> str:
    errors = re.findall(r'<(?:ul|div|p) class="[^"]*error[^"]*"[^>]*>(.*?)</(?:ul|div|p)>', response.text, re.S)
    text = " ".join(re.sub(r"<[^>]+>", " ", error) for error in errors)
    return " ".join(text.split()) or f"the site answered {response.status_code}"


def create_token(url: str, username: str, password: str, code: str, name: str, timeout: float = 60) -> dict:
    with httpx.Client(base_url=url, timeout=timeout, follow_redirects=False,
                      headers={"User-Agent": "uncloud-cli"}) as http:
        try:
            response = _form_post(http, "/login/", {"username": username, "password": password})
            if response.status_code != 302:
                raise CLIError(f"Login refused: {_form_error(response)}", EXIT_API)
            if response.headers.get("location", "").rstrip("/").endswith("/login/otp"):
                response = _form_post(http, "/login/otp/", {"code": code})
                if response.status_code != 302:
                    raise CLIError(f"One-time code refused: {_form_error(response)}", EXIT_API)
            response = http.post("/api/v1/tokens/", json={"name": name},
                                 headers={"X-CSRFToken": http.cookies.get("csrftoken") or "",
                                          "Referer": str(http.base_url)})
        except httpx.HTTPError as error:
            raise CLIError(f"Cannot reach {url}: {error}", EXIT_CONNECTION) from None
        if response.status_code != 201:
            raise CLIError(f"No token: {response.status_code} {error_text(response)}", EXIT_API)
        return response.json()
