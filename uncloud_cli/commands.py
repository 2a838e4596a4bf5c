"""The commands of `uncloud`, imported only when one of them runs (see uncloud_cli.main)."""

import functools
import os
import re

import click

from uncloud_cli import config
from uncloud_cli.errors import EXIT_CONNECTION, CLIError
from uncloud_cli.main import Session
from uncloud_cli.output import FORMATS, emit

UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
registry: dict[str, click.Command] = {}


class _Registry:
    """Stands where the root group stood: `cli.command()`, `cli.group()` and `cli.add_command()`."""

    def add_command(self, command, name=None):
        registry[name or command.name] = command

    def command(self, *args, **kwargs):
        def decorate(function):
            command = click.command(*args, **kwargs)(function)
            self.add_command(command)
            return command
        return decorate

    def group(self, *args, **kwargs):
        def decorate(function):
            group = click.group(*args, **kwargs)(function)
            self.add_command(group)
            return group
        return decorate


cli = _Registry()


def output_options(default_columns: list[str] | None = None):
    """-o and -c on a command that prints objects; the command gets `show(data)`."""
    def decorate(command):
        @click.option("-o", "--output", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                      help="Output format.")
        @click.option("-c", "--column", "columns", multiple=True, metavar="NAME[,NAME]",
                      help="Only these fields (repeat or separate with commas).")
        @functools.wraps(command)
        def wrapper(*args, fmt, columns, **kwargs):
            return command(*args, show=lambda data: emit(data, fmt, columns, default_columns), **kwargs)
        return wrapper
    return decorate


def wait_options(command):
    @click.option("--wait/--no-wait", default=False, help="Follow the operation to its end (exit 3 if it fails).")
    @click.option("--wait-timeout", type=float, default=900, show_default=True, metavar="SECONDS",
                  help="How long --wait follows the operation.")
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        return command(*args, **kwargs)
    return wrapper


def session() -> Session:
    return click.get_current_context().find_object(Session)


def api():
    return session().api


def resolve(path: str, ident: str, what: str) -> str:
    """A UUID as it is, or the UUID of the one object of that name."""
    if UUID.match(ident):
        return ident
    matches = api().list(path, {"name": ident})
    matches = [row for row in matches if row.get("name") == ident]
    if len(matches) != 1:
        raise CLIError(f"{'No' if not matches else 'More than one'} {what} named {ident!r}"
                       f"{'' if not matches else '; use its UUID'}.", 1)
    return matches[0]["uuid"]


def follow_if(wait: bool, timeout: float, operation: dict | None) -> None:
    if wait and operation is not None:
        api().follow(operation, timeout)


# --- login and contexts ----------------------------------------------------------------------------

@cli.command()
@click.option("--url", "login_url", help="The uncloud site, e.g. https://cloud.example.com (default: the context's).")
@click.option("--name", "context_name", default=None, help="Name of the context to store (default: the current "
              "one, or 'default').")
@click.option("--username", prompt=True)
@click.option("--password", prompt=True, hide_input=True)
@click.option("--otp", "code", prompt="One-time code (TOTP)", help="The code your authenticator app shows now.")
@click.option("--token-name", default=None, help="Name of the token to create (default: uncloud-cli@HOST).")
def login(login_url, context_name, username, password, code, token_name):
    """Log in with password and one-time code, create an API token and store it (file mode 600)."""
    data = config.load()
    name = context_name or data["current"] or "default"
    url = (login_url or data["contexts"].get(name, {}).get("url") or "").rstrip("/")
    if not url:
        raise CLIError("Which site? Give --url https://...", EXIT_CONNECTION)
    from uncloud_cli.login import create_token

    token = create_token(url, username, password, code, token_name or f"uncloud-cli@{os.uname().nodename}",
                         timeout=session().timeout)
    data["contexts"][name] = {"url": url, "token": token["token"], "username": username}
    data["current"] = name
    path = config.save(data)
    click.echo(f"Logged in to {url} as {username}; token {token['key_prefix']}… stored in {path} (context {name}).")


@cli.group()
def context():
    """Contexts: named pairs of API URL and token in the config file."""


@context.command("list")
@output_options(["current", "name", "url", "username"])
def context_list(show):
    data = config.load()
    show([{"current": name == data["current"], "name": name, "url": item.get("url"), "username": item.get("username")}
          for name, item in sorted(data["contexts"].items())])


@context.command("use")
@click.argument("name")
def context_use(name):
    """Make NAME the current context."""
    data = config.load()
    if name not in data["contexts"]:
        raise click.BadParameter(f"no context named {name!r}", param_hint="NAME")
    data["current"] = name
    config.save(data)


@context.command("set")
@click.argument("name")
@click.option("--url")
@click.option("--token", help="An API token (from the portal or `uncloud tokens create`).")
def context_set(name, url, token):
    """Create or change context NAME (and make it current)."""
    data = config.load()
    item = data["contexts"].setdefault(name, {})
    if url:
        item["url"] = url.rstrip("/")
    if token:
        item["token"] = token
    data["current"] = name
    config.save(data)


@context.command("delete")
@click.argument("name")
def context_delete(name):
    data = config.load()
    data["contexts"].pop(name, None)
    if data["current"] == name:
        data["current"] = None
    config.save(data)


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell):
    """Print the shell completion script: eval "$(uncloud completion bash)"."""
    from click.shell_completion import get_completion_class

    from uncloud_cli.main import cli as root

    click.echo(get_completion_class(shell)(root, {}, "uncloud", "_UNCLOUD_COMPLETE").source())


# --- generic resources ---------------------------------------------------------------------------------

def resource(name: str, path: str, what: str, columns: list[str], *, filters=(), deletable=True, by_name=True,
             help_text: str = ""):
    """A command group with list, show and (optionally) delete for the API collection at `path`."""
    group = click.Group(name, help=help_text or f"{what.capitalize()}s.")
    cli.add_command(group)

    def ident_of(ident):
        return resolve(path, ident, what) if by_name else ident

    list_params = [click.Option([f"--{flag.replace('_', '-')}"], help=f"Only those with this {flag}.")
                   for flag in filters]

    @output_options(columns)
    def list_command(show, **params):
        show(api().list(path, {key: value for key, value in params.items() if value is not None}))

    list_command.__doc__ = f"List {what}s."
    group.add_command(click.Command("list", callback=list_command, params=[*list_params, *_output_params(list_command)],
                                    help=f"List {what}s."))

    @group.command("show")
    @click.argument("ident", metavar="NAME_OR_UUID" if by_name else "UUID")
    @output_options()
    def show_command(ident, show):
        show(api().get(f"{path}{ident_of(ident)}/"))

    show_command.help = f"Show one {what}."
    if deletable:
        @group.command("delete")
        @click.argument("ident", metavar="NAME_OR_UUID" if by_name else "UUID")
        @wait_options
        def delete_command(ident, wait, wait_timeout):
            answer = api().send("DELETE", f"{path}{ident_of(ident)}/")
            operation = (answer or {}).get("operation") if isinstance(answer, dict) and "operation" in answer else (
                answer if isinstance(answer, dict) and "kind" in answer else None)
            follow_if(wait, wait_timeout, operation)
            click.echo(f"Deleted {what} {ident}." if operation is None or wait else
                       f"Deleting {what} {ident} (operation {operation['uuid']}).")

        delete_command.help = f"Delete a {what}."
    group.ident_of = ident_of
    return group


def _output_params(command):
    # The -o/-c options output_options added to a function, for building a click.Command by hand.
    return list(reversed(getattr(command, "__click_params__", [])))


# --- VMs -----------------------------------------------------------------------------------------------

VM_COLUMNS = ["uuid", "name", "status", "cores", "memory_mib", "disk_mib", "ipv6_addresses", "host"]
vms = resource("vms", "vms/", "VM", VM_COLUMNS, filters=["status", "name"], deletable=False,
               help_text="Virtual machines.")


def vm_action(vm_uuid: str, verb: str, body: dict | None, wait: bool, wait_timeout: float, show):
    answer = api().send("POST", f"vms/{vm_uuid}/{verb}/", body)
    follow_if(wait, wait_timeout, answer.get("operation"))
    show(api().get(f"vms/{vm_uuid}/") if wait else answer["vm"])


@vms.command("create")
@click.argument("name")
@click.option("--cores", type=int, default=1, show_default=True)
@click.option("--memory", default="1GiB", show_default=True, help='e.g. "2GiB" or 2048 (MiB)')
@click.option("--disk", default="10G", show_default=True, help='root disk, e.g. "20G"')
@click.option("--image", help="Image name or UUID (default: the site's default image).")
@click.option("--empty-disk", is_flag=True, help="No image: an empty root disk.")
@click.option("--network", "networks", multiple=True, help="Network name or UUID (repeat; default: the public one).")
@click.option("--ssh-key", "ssh_keys", multiple=True, help="SSH key name or UUID (repeat).")
@click.option("--user-data", type=click.File("r"), help="cloud-init user-data file ('-' for stdin).")
@click.option("--project", help="Project UUID (default: your first).")
@click.option("--stopped", is_flag=True, help="Create it without starting it.")
@click.option("--idempotency-key", help="Repeat this create safely: the same key returns the same VM.")
@wait_options
@output_options()
def vms_create(name, cores, memory, disk, image, empty_disk, networks, ssh_keys, user_data, project, stopped,
               idempotency_key, wait, wait_timeout, show):
    """Create a VM (and start it unless --stopped)."""
    body = {"name": name, "cores": cores, "memory": memory, "disk": disk}
    if empty_disk:
        body["image"] = None
    elif image:
        body["image"] = resolve("images/", image, "image")
    if networks:
        body["networks"] = [resolve("networks/", network, "network") for network in networks]
    if ssh_keys:
        body["ssh_keys"] = [resolve("ssh-keys/", key, "SSH key") for key in ssh_keys]
    if user_data:
        body["user_data"] = user_data.read()
    if project:
        body["project"] = project
    if stopped:
        body["desired_state"] = "stopped"
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    vm = api().send("POST", "vms/", body, headers=headers)
    if wait and not stopped:
        operations = api().list("operations/", {"target_uuid": vm["uuid"], "kind": "vm.create"})
        if operations:
            api().follow(operations[0], wait_timeout)
        vm = api().get(f"vms/{vm['uuid']}/")
    show(vm)


for _verb, _doc in (("start", "Start a stopped VM."), ("reboot", "Reset a running VM (hard).")):
    def _make(verb):
        @click.argument("ident", metavar="NAME_OR_UUID")
        @wait_options
        @output_options()
        def command(ident, wait, wait_timeout, show):
            vm_action(vms.ident_of(ident), verb, None, wait, wait_timeout, show)
        return command
    vms.add_command(click.command(_verb, help=_doc)(_make(_verb)))


@vms.command("console")
@click.argument("ident", metavar="NAME_OR_UUID")
@click.option("--serial", is_flag=True, help="Attach this terminal to the serial console (Ctrl-] leaves).")
@click.option("--open", "open_browser", is_flag=True, help="Open the Console tab in the web browser.")
def vms_console(ident, serial, open_browser):
    """The VM's console: print the portal's Console tab (graphical, noVNC), or --serial: this
    terminal on the serial line through the console gateway."""
    from urllib.parse import urlsplit

    vm_uuid = vms.ident_of(ident)
    site = urlsplit(api().base)
    if not serial:
        url = f"{api().base}/vms/{vm_uuid}/console/"
        click.echo(url)
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        return
    from uncloud_cli.console import attach

    ticket = api().send("POST", f"vms/{vm_uuid}/console/", {"kind": "serial"})
    ended = attach(ticket["url"], origin=f"{site.scheme}://{site.netloc}")
    click.echo(f"\r\nSerial console closed: {ended}.", err=True)


@vms.command("stop")
@click.argument("ident", metavar="NAME_OR_UUID")
@click.option("--hard", is_flag=True, help="Skip the ACPI powerdown.")
@wait_options
@output_options()
def vms_stop(ident, hard, wait, wait_timeout, show):
    """Stop a VM (ACPI powerdown, then hard after the site's timeout)."""
    vm_action(vms.ident_of(ident), "stop", {"hard": hard}, wait, wait_timeout, show)


@vms.command("rebuild")
@click.argument("ident", metavar="NAME_OR_UUID")
@click.option("--image", required=True, help="Image name or UUID.")
@wait_options
@output_options()
def vms_rebuild(ident, image, wait, wait_timeout, show):
    """Make the root disk again from an image (its content is lost)."""
    vm_action(vms.ident_of(ident), "rebuild", {"image": resolve("images/", image, "image")}, wait, wait_timeout, show)


@vms.command("resize")
@click.argument("ident", metavar="NAME_OR_UUID")
@click.option("--cores", type=int, help="New number of cores.")
@click.option("--memory", help='New memory, e.g. "4GiB" or 4096 (MiB).')
@click.option("--disk", help='A larger root disk, e.g. "40G" (disks only grow).')
@wait_options
@output_options()
def vms_resize(ident, cores, memory, disk, wait, wait_timeout, show):
    """New cores, memory or a larger root disk (quota checked, the VM's order replaced)."""
    body = {name: value for name, value in (("cores", cores), ("memory", memory), ("disk", disk)) if value is not None}
    if not body:
        raise click.UsageError("say what changes: --cores, --memory or --disk")
    vm_action(vms.ident_of(ident), "resize", body, wait, wait_timeout, show)


@vms.command("rename")
@click.argument("ident", metavar="NAME_OR_UUID")
@click.argument("new_name")
@output_options()
def vms_rename(ident, new_name, show):
    show(api().send("PATCH", f"vms/{vms.ident_of(ident)}/", {"name": new_name}))


@vms.command("delete")
@click.argument("ident", metavar="NAME_OR_UUID")
@wait_options
def vms_delete(ident, wait, wait_timeout):
    """Delete a VM and its root disk."""
    vm_uuid = vms.ident_of(ident)
    operation = api().send("DELETE", f"vms/{vm_uuid}/").get("operation")
    follow_if(wait, wait_timeout, operation)
    click.echo(f"Deleted VM {ident}." if wait or operation is None else
               f"Deleting VM {ident} (operation {operation['uuid']}; --wait follows it).")


@vms.command("migrate")
@click.argument("ident", metavar="NAME_OR_UUID")
@click.option("--host", help="Destination host name (default: the scheduler picks).")
@click.option("--cold", is_flag=True, help="Stop, move, start instead of a live migration.")
@wait_options
@output_options()
def vms_migrate(ident, host, cold, wait, wait_timeout, show):
    """Staff: move a VM to another host."""
    vm_action(vms.ident_of(ident), "migrate", {"host": host, "live": not cold}, wait, wait_timeout, show)


@vms.group("firewall")
def vms_firewall():
    """A VM's ingress firewall rules."""


@vms_firewall.command("show")
@click.argument("ident", metavar="NAME_OR_UUID")
@output_options(["protocol", "port_min", "port_max", "source", "description"])
def firewall_show(ident, show):
    show(api().get(f"vms/{vms.ident_of(ident)}/firewall/")["rules"])


@vms_firewall.command("set")
@click.argument("ident", metavar="NAME_OR_UUID")
@click.option("--rule", "rules", multiple=True, metavar="PROTO[:PORT[-PORT]][@SOURCE]",
              help="e.g. tcp:22, tcp:8000-8080@2001:db8::/32, icmpv6, any (repeat). No rule: close everything.")
@output_options(["protocol", "port_min", "port_max", "source", "description"])
def firewall_set(ident, rules, show):
    """Replace the VM's rules with these."""
    parsed = []
    for rule in rules:
        spec, _, source = rule.partition("@")
        protocol, _, ports = spec.partition(":")
        item = {"protocol": protocol, "source": source or "::/0"}
        if ports:
            low, _, high = ports.partition("-")
            try:
                item["port_min"], item["port_max"] = int(low), int(high or low)
            except ValueError:
                raise click.BadParameter(f"{rule!r}: ports are numbers", param_hint="--rule") from None
        parsed.append(item)
    show(api().send("PUT", f"vms/{vms.ident_of(ident)}/firewall/", {"rules": parsed})["rules"])


# --- the other resources -------------------------------------------------------------------------------

projects = resource("projects", "projects/", "project", ["uuid", "name", "owner", "members"], by_name=False,
                    help_text="Projects and their members.")


@projects.command("create")
@click.argument("name")
@output_options()
def projects_create(name, show):
    show(api().send("POST", "projects/", {"name": name}))


@projects.command("invite")
@click.argument("project_uuid", metavar="PROJECT_UUID")
@click.argument("who", metavar="USERNAME_OR_EMAIL")
@output_options()
def projects_invite(project_uuid, who, show):
    """Invite a user (by username or e-mail address); they join when they accept it."""
    show(api().send("POST", f"projects/{project_uuid}/members/", {"email" if "@" in who else "username": who}))


@projects.command("invitations")
@click.argument("project_uuid", metavar="PROJECT_UUID")
@output_options(["uuid", "invitee", "created", "expires"])
def projects_invitations(project_uuid, show):
    """Open invitations of a project (owner)."""
    show(api().get(f"projects/{project_uuid}/invitations/"))


@projects.command("cancel-invitation")
@click.argument("project_uuid", metavar="PROJECT_UUID")
@click.argument("invitation_uuid", metavar="INVITATION_UUID")
def projects_cancel_invitation(project_uuid, invitation_uuid):
    api().send("DELETE", f"projects/{project_uuid}/invitations/{invitation_uuid}/")


@projects.command("remove-member")
@click.argument("project_uuid", metavar="PROJECT_UUID")
@click.argument("username")
def projects_remove_member(project_uuid, username):
    api().send("DELETE", f"projects/{project_uuid}/members/{username}/")


invitations = resource("invitations", "invitations/", "invitation", ["uuid", "project_name", "invited_by", "expires"],
                       deletable=False, by_name=False, help_text="Invitations to projects you received.")
for _verb in ("accept", "decline"):
    def _make_invitation(verb):
        @click.argument("uuid")
        def command(uuid):
            api().send("POST", f"invitations/{uuid}/{verb}/")
            click.echo(f"Invitation {uuid}: {verb}ed.")
        return command
    invitations.add_command(click.command(_verb, help=f"{_verb.capitalize()} an invitation.")(
        _make_invitation(_verb)))

ssh_keys = resource("ssh-keys", "ssh-keys/", "SSH key", ["uuid", "name", "key_type", "fingerprint"],
                    help_text="SSH keys put into new VMs.")


@ssh_keys.command("create")
@click.argument("name")
@click.argument("public_key_file", type=click.File("r"), metavar="PUBLIC_KEY_FILE")
@output_options()
def ssh_keys_create(name, public_key_file, show):
    """Add a public key, e.g. `uncloud ssh-keys create laptop ~/.ssh/id_ed25519.pub`."""
    show(api().send("POST", "ssh-keys/", {"name": name, "public_key": public_key_file.read().strip()}))


networks = resource("networks", "networks/", "network", ["uuid", "name", "prefix", "vni", "is_public", "status"],
                    filters=["name"], help_text="Private networks (and the public ones).")


@networks.command("create")
@click.argument("name")
@output_options()
def networks_create(name, show):
    show(api().send("POST", "networks/", {"name": name}))


nics = resource("nics", "nics/", "NIC", ["uuid", "vm", "network", "mac", "ipv6_address", "status"], by_name=False,
                help_text="Network interfaces of your VMs.")


@nics.command("create")
@click.argument("vm", metavar="VM")
@click.argument("network", metavar="NETWORK")
@wait_options
@output_options()
def nics_create(vm, network, wait, wait_timeout, show):
    """Attach VM to NETWORK (hot-plugged when it runs)."""
    answer = api().send("POST", "nics/", {"vm": vms.ident_of(vm), "network": resolve("networks/", network, "network")})
    follow_if(wait, wait_timeout, answer.get("operation"))
    show(answer["nic"])


ipv4 = resource("ipv4", "ipv4-addresses/", "IPv4 address", ["uuid", "address", "vm", "nic", "status"],
                by_name=False, help_text="Public IPv4 addresses (NAT64).")


@ipv4.command("create")
@click.option("--nic", help="NIC UUID to map it to.")
@output_options()
def ipv4_create(nic, show):
    show(api().send("POST", "ipv4-addresses/", {"nic": nic} if nic else {}))


@ipv4.command("map")
@click.argument("uuid")
@click.argument("nic", required=False)
@output_options()
def ipv4_map(uuid, nic, show):
    """Map the address to NIC, or unmap it when no NIC is given."""
    show(api().send("PATCH", f"ipv4-addresses/{uuid}/", {"nic": nic}))


domains = resource("domains", "domains/", "domain name", ["uuid", "name", "vm", "status", "proxy_protocol"],
                   filters=["name", "status"],
                   help_text="Domain names served to IPv4 visitors through the shared proxy (HTTP by name, HTTPS by SNI).")


@domains.command("create")
@click.argument("name")
@click.argument("vm")
@click.option("--proxy-protocol", is_flag=True, help="Send the PROXY protocol v2 header to the VM.")
@output_options()
def domains_create(name, vm, proxy_protocol, show):
    """Claim NAME for VM. Point NAME's A record at a proxy address and make the VM answer the shown
    challenge_url with the proof_token on port 80; the name is served once proven."""
    show(api().send("POST", "domains/", {"name": name, "vm": vms.ident_of(vm), "proxy_protocol": proxy_protocol}))


@domains.command("verify")
@click.argument("ident", metavar="NAME_OR_UUID")
@output_options()
def domains_verify(ident, show):
    """Prove the name again (after a failed proof)."""
    show(api().send("POST", f"domains/{domains.ident_of(ident)}/verify/"))


@domains.command("set")
@click.argument("ident", metavar="NAME_OR_UUID")
@click.option("--vm", help="Point the name at this VM (same project).")
@click.option("--proxy-protocol/--no-proxy-protocol", default=None, help="Send the PROXY protocol v2 header.")
@output_options()
def domains_set(ident, vm, proxy_protocol, show):
    body = {key: value for key, value in (("vm", vms.ident_of(vm) if vm else None),
                                          ("proxy_protocol", proxy_protocol)) if value is not None}
    show(api().send("PATCH", f"domains/{domains.ident_of(ident)}/", body))


images = resource("images", "images/", "image", ["uuid", "name", "status", "is_public", "virtual_size_bytes"],
                  filters=["name", "status"], help_text="OS images.")


@images.command("upload")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "source_format", type=click.Choice(["qcow2", "raw"]), default="qcow2", show_default=True)
@click.option("--description", default="")
@click.option("--public", is_flag=True, help="Staff: publish for everyone.")
@click.option("--wait/--no-wait", default=False, help="Wait until it is available or rejected (exit 3).")
@click.option("--wait-timeout", type=float, default=900, show_default=True, metavar="SECONDS")
@output_options()
def images_upload(name, file, source_format, description, public, wait, wait_timeout, show):
    """Upload an image with a progress bar; it is validated on the server."""
    from uncloud_cli.upload import upload_image, wait_for_image

    image = upload_image(api(), file, {"name": name, "format": source_format, "description": description,
                                       "public": "true" if public else "false"})
    if wait:
        image = wait_for_image(api(), image, wait_timeout)
    show(image)


disks = resource("disks", "disks/", "disk", ["uuid", "name", "role", "vm", "size_mib", "storage", "status"],
                 by_name=False, help_text="Root disks and data volumes.")


@disks.command("create")
@click.argument("name")
@click.option("--size", required=True, help='e.g. "20G"')
@click.option("--storage", type=click.Choice(["local", "rbd"]), default="local", show_default=True)
@output_options()
def disks_create(name, size, storage, show):
    show(api().send("POST", "disks/", {"name": name, "size": size, "storage": storage}))


def _disk_change(uuid, verb, body, wait, wait_timeout, show):
    answer = api().send("POST", f"disks/{uuid}/{verb}/", body)
    follow_if(wait, wait_timeout, answer.pop("operation", None))
    show(api().get(f"disks/{uuid}/") if wait else answer)


@disks.command("attach")
@click.argument("uuid")
@click.argument("vm", metavar="VM")
@wait_options
@output_options()
def disks_attach(uuid, vm, wait, wait_timeout, show):
    _disk_change(uuid, "attach", {"vm": vms.ident_of(vm)}, wait, wait_timeout, show)


@disks.command("detach")
@click.argument("uuid")
@wait_options
@output_options()
def disks_detach(uuid, wait, wait_timeout, show):
    _disk_change(uuid, "detach", None, wait, wait_timeout, show)


@disks.command("extend")
@click.argument("uuid")
@click.option("--size", required=True, help="The new, larger size.")
@wait_options
@output_options()
def disks_extend(uuid, size, wait, wait_timeout, show):
    _disk_change(uuid, "extend", {"size": size}, wait, wait_timeout, show)


@disks.command("snapshot")
@click.argument("uuid")
@click.argument("name")
@output_options()
def disks_snapshot(uuid, name, show):
    show(api().send("POST", f"disks/{uuid}/snapshot/", {"name": name}))


snapshots = resource("snapshots", "snapshots/", "snapshot", ["uuid", "name", "disk", "status", "size_bytes"],
                     by_name=False, help_text="Disk snapshots.")


@snapshots.command("to-image")
@click.argument("uuid")
@click.argument("name")
@output_options()
def snapshots_to_image(uuid, name, show):
    """Make an image of a snapshot."""
    show(api().send("POST", f"snapshots/{uuid}/image/", {"name": name}))


operations = resource("operations", "operations/", "operation",
                      ["uuid", "kind", "target_uuid", "state", "step", "progress", "error"],
                      filters=["state", "kind", "target_uuid"], deletable=False, by_name=False,
                      help_text="Long-running work and its progress.")


@operations.command("wait")
@click.argument("uuid")
@click.option("--wait-timeout", type=float, default=900, show_default=True, metavar="SECONDS")
@output_options()
def operations_wait(uuid, wait_timeout, show):
    """Follow an operation to its end (exit 3 if it fails, 4 on timeout)."""
    show(api().follow(api().get(f"operations/{uuid}/", params={"all": "1"}), wait_timeout))


tokens = resource("tokens", "tokens/", "token", ["uuid", "name", "key_prefix", "scope", "expires", "last_used"],
                  by_name=False, help_text="Your API tokens (delete revokes).")

bills = resource("bills", "bills/", "bill", ["uuid", "number", "period_start", "period_end", "state", "total",
                                              "currency", "due_on"], deletable=False, by_name=False,
                 help_text="Your bills.")


@bills.command("pdf")
@click.argument("uuid")
@click.option("-f", "--file", "target", type=click.Path(dir_okay=False, writable=True),
              help="Where to write it (default: bill-NUMBER.pdf).")
def bills_pdf(uuid, target):
    """Download a bill as PDF."""
    response = api().request("GET", f"bills/{uuid}/pdf/")
    if target is None:
        number = api().get(f"bills/{uuid}/").get("number") or uuid
        target = f"bill-{number}.pdf"
    with open(target, "wb") as handle:
        handle.write(response.content)
    click.echo(target)


hosts = resource("hosts", "hosts/", "host", ["uuid", "name", "status", "cores", "memory_mib", "disk_gib",
                                              "last_heartbeat"], filters=["status"], deletable=False, by_name=False,
                 help_text="Staff: hypervisors.")


def _host_operation_command(verb):
    @click.argument("uuid")
    @wait_options
    @output_options()
    def command(uuid, wait, wait_timeout, show):
        operation = api().send("POST", f"hosts/{uuid}/{verb}/")
        show(api().follow(operation, wait_timeout) if wait else operation)
    return command


for _verb, _doc in (
        ("check", "Staff: check a host now (ships the host program, records its facts)."),
        ("maintenance", "Staff: drain a host (its VMs move away); empty, it is in maintenance. "
                        "`hosts enable` brings it back.")):
    hosts.add_command(click.command(_verb, help=_doc)(_host_operation_command(_verb)))


@hosts.command("enable")
@click.argument("uuid")
@output_options()
def hosts_enable(uuid, show):
    """Staff: take a host out of maintenance (new VMs may be placed on it again)."""
    show(api().send("PATCH", f"hosts/{uuid}/", {"status": "enabled"}))
