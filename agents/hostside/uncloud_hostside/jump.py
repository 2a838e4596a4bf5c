"""jump-sync: the SSH jump host of a proxy host, an sshd of its own (own config, port, host key).

`ssh -J <user>@<jump> root@<guest IPv6>` reaches a customer's guest from IPv4. One system user
carries every project's keys; each key line allows nothing but forwarding to port 22 of the
addresses its projects own (`restrict,port-forwarding,permitopen=...`): no shell, no tty, no agent,
no reverse tunnels, no other port or guest.
"""

import ipaddress
import os
import pwd
import re
import signal

from .checks import check_bool, check_fields, check_int, check_ipv6_address, check_list, check_state_dir
from .errors import HostsideError, bad_spec
from .paths import jump_paths
from .state import (
    ensure_directory,
    host_lock,
    owned_process,
    read_text,
    remove_file,
    send_signal,
    stop_process,
    wait_for_owned_process,
    write_file_atomically,
)
from .system import require_binaries, run_command

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself and insists on an absolute path
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
KEY_BODY_RE = re.compile(r"^[A-Za-z0-9+/]{16,16384}={0,2}$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
MAX_KEYS = 20000
MAX_PERMITS = 4096


def parse_key(entry, field):
    """Only `type base64` survives (a comment is dropped): nothing a customer wrote can add an option."""
    check_fields(entry, ["key", "permit"])
    words = entry["key"].split() if isinstance(entry["key"], str) else []
    if len(words) < 2 or words[0] not in KEY_TYPES or not KEY_BODY_RE.match(words[1]):
        raise bad_spec(f"{field}.key must be an OpenSSH public key ({', '.join(KEY_TYPES[:3])}, ...)")
    permit = sorted({str(check_ipv6_address(address, f"{field}.permit"))
                     for address in check_list(entry["permit"], f"{field}.permit", MAX_PERMITS)})
    return {"key": f"{words[0]} {words[1]}", "permit": permit}


def parse_jump_spec(spec):
    check_fields(spec, ["state_dir", "keys"], ["listen", "port", "user", "enabled", "strict_modes"])
    listen = []
    for address in check_list(spec.get("listen", ["0.0.0.0"]), "listen", 16):
        try:
            listen.append(ipaddress.ip_address(address))
        except (ValueError, TypeError):
            raise bad_spec("listen must hold IP addresses") from None
    user = spec.get("user", "uncloud-jump")
    if not isinstance(user, str) or not USER_RE.match(user) or user == "root":
        raise bad_spec("user must be a system user name other than root")
    keys = {}
    for index, entry in enumerate(check_list(spec["keys"], "keys", MAX_KEYS)):
        parsed = parse_key(entry, f"keys[{index}]")
        # sshd takes the first line of a key: a key in two projects gets one line with both lists.
        keys.setdefault(parsed["key"], set()).update(parsed["permit"])
    return {"state_dir": check_state_dir(spec["state_dir"]), "listen": listen,
            "port": check_int(spec.get("port", 22), "port", 1, 65535), "user": user,
            "enabled": check_bool(spec.get("enabled", True), "enabled"),
            "strict_modes": check_bool(spec.get("strict_modes", True), "strict_modes"),
            "keys": {key: sorted(permit) for key, permit in sorted(keys.items()) if permit}}


def render_authorized_keys(keys):
    lines = ["# Written by the uncloud host program (jump-sync); changes here are overwritten."]
    for key, permit in keys.items():
        opens = ",".join(f'permitopen="[{address}]:22"' for address in permit)
        lines.append(f'restrict,port-forwarding,command="/bin/false",{opens} {key}')
    return "\n".join(lines) + "\n"


def render_sshd_config(jump, paths):
    listen = [f"ListenAddress [{address}]:{jump['port']}" if address.version == 6
              else f"ListenAddress {address}:{jump['port']}" for address in jump["listen"]]
    return "\n".join([
        "# Written by the uncloud host program (jump-sync); changes here are overwritten.",
        *listen,
        f"HostKey {paths['host_key']}",
        f"PidFile {paths['pid']}",
        # Read by root (the state directory is closed to the jump user): the file lists every
        # project's keys and guests, so it stays private to this host.
        "AuthorizedKeysFile none",
        f"AuthorizedKeysCommand /bin/cat {paths['authorized_keys']}",
        "AuthorizedKeysCommandUser root",
        f"AllowUsers {jump['user']}",
        "PermitRootLogin no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "AuthenticationMethods publickey",
        # Forwarding only, and only what each key line permits (local forwards to port 22).
        "AllowTcpForwarding local",
        "AllowAgentForwarding no",
        "AllowStreamLocalForwarding no",
        "X11Forwarding no",
        "PermitTunnel no",
        "GatewayPorts no",
        "PermitTTY no",
        "PermitUserRC no",
        "PermitUserEnvironment no",
        "ForceCommand /bin/false",
        f"StrictModes {'yes' if jump['strict_modes'] else 'no'}",
        "UsePAM no",
        "PrintMotd no",
        "LoginGraceTime 20",
        "MaxAuthTries 4",
        "MaxStartups 50:30:200",
        "ClientAliveInterval 60",
        "",
    ])


def ensure_host_key(paths, changes):
    if not os.path.exists(paths["host_key"]):
        remove_file(f"{paths['host_key']}.pub")
        run_command(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "uncloud-jump", "-f", paths["host_key"]])
        changes.append("made a host key")
    return read_text(f"{paths['host_key']}.pub").split()[:2]


def verb_jump_sync(spec):
    """Make this host's jump sshd allow exactly the given keys to the given guests (the whole desired
    state), or stop it (enabled: false)."""
    jump = parse_jump_spec(spec)
    paths = jump_paths(jump["state_dir"])
    changes = []
    with host_lock(jump["state_dir"]):
        ensure_directory(paths["dir"])
        if not jump["enabled"]:
            pid = owned_process(paths["pid"], paths["config"])
            if pid is not None:
                stop_process(pid)
                changes.append("stopped the jump sshd")
            remove_file(paths["pid"])
            return {"running": False, "changes": changes}
        try:
            pwd.getpwnam(jump["user"])
        except KeyError:
            raise HostsideError("not_found", f"the jump user {jump['user']!r} does not exist on this host") from None
        require_binaries("ssh-keygen", SSHD)
        host_key = ensure_host_key(paths, changes)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        # The keys file is read at each login: writing it is enough, no reload.
        keys_text = render_authorized_keys(jump["keys"])
        if read_text(paths["authorized_keys"]) != keys_text:
            write_file_atomically(paths["authorized_keys"], keys_text)
            changes.append("wrote authorized keys")
        config = render_sshd_config(jump, paths)
        unchanged = read_text(paths["config"]) == config
        pid = owned_process(paths["pid"], paths["config"])
        if not (unchanged and pid is not None):  # the same config on a running sshd: nothing to check
            write_file_atomically(paths["candidate"], config)
            run_command([SSHD, "-t", "-f", paths["candidate"]])
            os.replace(paths["candidate"], paths["config"])
        if pid is None:
            remove_file(paths["pid"])
            run_command([SSHD, "-f", paths["config"], "-E", paths["log"]])
            pid = wait_for_owned_process(paths["pid"], paths["config"], "the jump sshd", log=paths["log"])
            changes.append("started the jump sshd")
        elif not unchanged:
            send_signal(pid, signal.SIGHUP)  # sshd re-executes itself with the new config
            changes.append("reloaded the jump sshd")
    return {"running": True, "pid": pid, "port": jump["port"], "keys": len(jump["keys"]),
            "host_key": " ".join(host_key), "changes": changes}
