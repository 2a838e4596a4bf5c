"""Talking to the API: one httpx client per command, errors turned into exit codes.

httpx is imported here, and this module only when a command talks to the server."""

import sys
import time

import click
import httpx

from uncloud_cli.errors import EXIT_API, EXIT_CONNECTION, EXIT_OPERATION_FAILED, EXIT_TIMEOUT, CLIError

TERMINAL_STATES = {"succeeded", "failed", "cancelled"}


def error_text(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        if set(body) <= {"detail", "limit_bytes"} and "detail" in body:
            return str(body["detail"])
        return "; ".join(f"{field}: {' '.join(map(str, value)) if isinstance(value, list) else value}"
                         for field, value in body.items())
    return str(body)


class API:
    def __init__(self, url: str, token: str | None, timeout: float = 60.0):
        self.base = url.rstrip("/")
        headers = {"User-Agent": "uncloud-cli"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=self.base, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs):
        url = path if path.startswith(("http://", "https://", "/")) else f"/api/v1/{path}"
        try:
            response = self.http.request(method, url, **kwargs)
        except httpx.TimeoutException as error:
            raise CLIError(f"{self.base} did not answer in time ({error.__class__.__name__}).", EXIT_TIMEOUT) from None
        except httpx.HTTPError as error:
            raise CLIError(f"Cannot reach {self.base}: {error}", EXIT_CONNECTION) from None
        if response.status_code >= 400:
            raise CLIError(f"{response.status_code} {response.reason_phrase}: {error_text(response)}", EXIT_API)
        return response

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs).json()

    def send(self, method, path, body=None, **kwargs):
        response = self.request(method, path, json=body, **kwargs)
        return response.json() if response.content else None

    def list(self, path: str, params: dict | None = None) -> list:
        """Every row of a paginated list (limit/offset, as every list of the API is)."""
        rows, params = [], {**(params or {}), "limit": 500, "offset": 0}
        while True:
            page = self.get(path, params=params)
            rows.extend(page["results"])
            if not page.get("next"):
                return rows
            params["offset"] += len(page["results"])

    def follow(self, operation: dict, timeout: float, interval: float = 1.0) -> dict:
        """Follow an operation to its end with a progress bar on stderr; exit codes for failure and timeout."""
        deadline = time.monotonic() + timeout
        shown = None
        tty = sys.stderr.isatty()
        while True:
            line = (f"{operation['kind']}: {operation['state']} {operation.get('step') or ''} "
                    f"{operation.get('progress', 0)}%").rstrip()
            if line != shown:
                if tty:
                    filled = int(operation.get("progress") or 0) // 5
                    click.echo(f"\r[{'#' * filled}{'.' * (20 - filled)}] {line}\033[K", err=True, nl=False)
                else:
                    click.echo(line, err=True)
                shown = line
            if operation["state"] in TERMINAL_STATES:
                if tty:
                    click.echo("", err=True)
                if operation["state"] != "succeeded":
                    raise CLIError(f"Operation {operation['uuid']} ({operation['kind']}) {operation['state']}: "
                                   f"{operation.get('error') or 'no reason given'}", EXIT_OPERATION_FAILED)
                return operation
            if time.monotonic() >= deadline:
                if tty:
                    click.echo("", err=True)
                raise CLIError(f"Operation {operation['uuid']} ({operation['kind']}) is still {operation['state']} "
                               f"after {timeout:.0f} s; follow it with: uncloud operations show {operation['uuid']}",
                               EXIT_TIMEOUT)
            time.sleep(interval)
            # all=1: staff follow operations outside their projects too (a host check); others ignore it.
            operation = self.get(f"operations/{operation['uuid']}/", params={"all": "1"})
