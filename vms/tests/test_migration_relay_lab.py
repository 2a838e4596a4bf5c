"""A migration's SSH key opens only the incoming sockets of the VM it sends, on real lab hosts.

hv2 lets in two keys, one per VM moving from hv1 (as vms/migration.py's prepare step does);
through hv2's real sshd on the underlay, from hv1's namespace, each key reaches the relay of its
own VM and is refused another VM's sockets and any other command; once its move ends
(migration-deauthorize) the key opens nothing at all, and the other VM's key still works.
"""

import subprocess
import uuid
from pathlib import Path

import pytest

from agents.hosts import agent_for
from tests.lab.controlplane import register_lab_hosts

pytestmark = pytest.mark.lab


def make_key(directory, name) -> tuple[str, str]:
    path = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
    return str(path), " ".join((directory / f"{name}.pub").read_text().split()[:2])


def relay_answer(source_lab_host, destination_lab_host, key: str, command: str) -> str:
    """What the destination's sshd and relay say to `command` sent with `key` (stderr; the relay
    has no socket to join here, no guest waits)."""
    completed = source_lab_host.run(
        ["ssh", "-F", "/dev/null", "-i", key, "-p", str(destination_lab_host.ssh_port), "-o", "IdentitiesOnly=yes",
         "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", f"root@{destination_lab_host.underlay_address}", command],
        input="", check=False, timeout=60)
    assert completed.returncode != 0, completed
    return completed.stderr.strip()


def test_a_migration_key_opens_only_its_vm_s_sockets_and_nothing_after_the_move(lab_factory, tmp_path, settings, db):
    lab = lab_factory(n_hosts=2)
    settings.UNCLOUD_SSH_KEY_FILE = str(lab.hosts[0].client_key_path)
    hv1, hv2 = register_lab_hosts(lab)
    source, destination = lab.hosts
    first_vm, second_vm, stranger = (str(uuid.uuid4()) for _ in range(3))
    first_key, first_public = make_key(tmp_path, "first")
    second_key, second_public = make_key(tmp_path, "second")
    target = agent_for(hv2)
    for vm_uuid, public in ((first_vm, first_public), (second_vm, second_public)):
        target.call("migration-authorize", {"uuid": vm_uuid, "source": hv1.name, "public_key": public,
                                            "source_address": hv1.underlay_address})
    lines = (Path(destination.state_dir) / "migration" / "authorized_keys").read_text().splitlines()
    assert len(lines) == 2 and all(f"migration-relay {destination.state_dir} " in line for line in lines), lines

    # Each key reaches its own VM's relay (which finds no guest waiting), and only that.
    assert f"no incoming migrate socket for {first_vm}" in relay_answer(source, destination, first_key,
                                                                        f"migrate {first_vm}")
    assert f"no incoming nbd socket for {second_vm}" in relay_answer(source, destination, second_key,
                                                                     f"nbd {second_vm}")
    for key, own, other in ((first_key, first_vm, second_vm), (second_key, second_vm, stranger)):
        for kind in ("migrate", "nbd"):
            assert relay_answer(source, destination, key, f"{kind} {other}") == \
                f"this key opens only the sockets of VM {own}"
    assert relay_answer(source, destination, first_key, "id") == "usage: migrate|nbd <vm uuid>"

    # The first VM's move ended: its key opens nothing; the second VM's key is untouched.
    assert target.call("migration-deauthorize", {"uuid": first_vm})["changes"]
    assert target.call("migration-deauthorize", {"uuid": first_vm})["changes"] == []  # twice is fine
    assert "Permission denied" in relay_answer(source, destination, first_key, f"migrate {first_vm}")
    assert f"no incoming migrate socket for {second_vm}" in relay_answer(source, destination, second_key,
                                                                         f"migrate {second_vm}")
    target.call("migration-deauthorize", {"uuid": second_vm})
    assert (Path(destination.state_dir) / "migration" / "authorized_keys").read_text() == ""
