"""`uncloud`: the command-line client of the uncloud API.

Start-up is kept short: this module imports only click and the standard library and knows the
command groups by name; a group's code (uncloud_cli.commands) is imported when a command runs, and
httpx (uncloud_cli.api) and PyYAML only by the commands that need them.
"""

import sys

import click

from uncloud_cli import __version__
from uncloud_cli.errors import EXIT_CODES_HELP, CLIError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 110}

# name -> one line of help, for `uncloud --help` without importing any command's code.
COMMANDS = {
    "login": "Log in with password and one-time code; store a new API token (mode 600).",
    "context": "Contexts: named pairs of API URL and token in the config file.",
    "vms": "Virtual machines: create, list, show, start, stop, reboot, rebuild, delete, firewall, console.",
    "ssh-keys": "SSH keys put into new VMs.",
    "networks": "Private networks (and the public ones).",
    "nics": "Network interfaces of your VMs.",
    "ipv4": "Public IPv4 addresses (NAT64).",
    "domains": "Domain names served to IPv4 visitors by the shared proxy.",
    "images": "OS images: list, upload (with progress), delete.",
    "disks": "Root disks and data volumes.",
    "snapshots": "Disk snapshots.",
    "operations": "Long-running work and its progress.",
    "projects": "Projects and their members.",
    "invitations": "Invitations to projects you received.",
    "tokens": "Your API tokens (delete revokes).",
    "bills": "Your bills (list, show, PDF).",
    "hosts": "Staff: hypervisors.",
    "completion": "Print the shell completion script.",
}


class Session:
    """What the root options chose; the API client is made on first use."""

    def __init__(self, context, url, token, timeout):
        self.options = (context, url, token)
        self.timeout = timeout
        self._api = None

    @property
    def api(self):
        if self._api is None:
            from uncloud_cli import config
            from uncloud_cli.errors import EXIT_CONNECTION

            settings = config.resolve(*self.options)
            if settings.get("missing"):
                raise CLIError(f"No context named {settings['missing']!r} (see: uncloud context list).", EXIT_CONNECTION)
            if not settings.get("url"):
                raise CLIError("No API URL: run `uncloud login --url https://...`, or set UNCLOUD_URL.", EXIT_CONNECTION)
            from uncloud_cli.api import API

            self._api = API(settings["url"], settings.get("token"), timeout=self.timeout)
        return self._api


class Root(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        from uncloud_cli import commands

        return commands.registry[name]

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl(sorted(COMMANDS.items()))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CLIError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(error.code)


@click.group(cls=Root, context_settings=CONTEXT_SETTINGS, epilog=EXIT_CODES_HELP)
@click.option("--context", "context_name", envvar="UNCLOUD_CONTEXT", help="Context of the config file to use.")
@click.option("--url", envvar="UNCLOUD_URL", help="API URL (overrides the context).")
@click.option("--token", envvar="UNCLOUD_TOKEN", help="API token (overrides the context).")
@click.option("--timeout", type=float, default=60, show_default=True, help="Seconds to wait for each answer.")
@click.version_option(__version__, "-V", "--version", prog_name="uncloud", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx, context_name, url, token, timeout):
    """The uncloud API from the command line. Start with `uncloud login --url URL`."""
    ctx.obj = Session(context_name, url, token, timeout)


def main():
    cli(prog_name="uncloud")
