"""Image upload with a progress bar: httpx streams the file from disk in chunks (never all in memory)."""

import os
import sys
import time

import click

from uncloud_cli.errors import EXIT_OPERATION_FAILED, EXIT_TIMEOUT, CLIError


class ProgressFile:
    """A file that reports how much of it was read (httpx reads it chunk by chunk)."""

    def __init__(self, path: str):
        self.handle = open(path, "rb")  # noqa: SIM115 (closed by upload_image)
        self.size = os.fstat(self.handle.fileno()).st_size
        self.sent = 0
        self.tty = sys.stderr.isatty()
        self.shown = -1
        self.name = os.path.basename(path)

    def fileno(self):
        return self.handle.fileno()

    def seek(self, *args):
        return self.handle.seek(*args)

    def tell(self):
        return self.handle.tell()

    def read(self, size=-1):
        chunk = self.handle.read(size)
        self.sent += len(chunk)
        percent = 100 * self.sent // self.size if self.size else 100
        if percent != self.shown and (self.tty or percent % 10 == 0):
            filled = percent // 5
            text = f"[{'#' * filled}{'.' * (20 - filled)}] {percent}% of {self.size} bytes"
            click.echo(f"\r{text}\033[K" if self.tty else text, err=True, nl=not self.tty)
            self.shown = percent
        return chunk

    def close(self):
        if self.tty and self.shown >= 0:
            click.echo("", err=True)
        self.handle.close()


def upload_image(api, path: str, fields: dict) -> dict:
    progress = ProgressFile(path)
    try:
        response = api.request("POST", "images/", data=fields,
                               files={"file": (progress.name, progress, "application/octet-stream")}, timeout=None)
    finally:
        progress.close()
    return response.json()


def wait_for_image(api, image: dict, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while image["status"] not in ("available", "rejected"):
        if time.monotonic() >= deadline:
            raise CLIError(f"Image {image['uuid']} is still {image['status']} after {timeout:.0f} s.", EXIT_TIMEOUT)
        time.sleep(1)
        image = api.get(f"images/{image['uuid']}/")
    if image["status"] == "rejected":
        raise CLIError(f"Image {image['name']} was rejected: {image.get('error')}", EXIT_OPERATION_FAILED)
    return image
