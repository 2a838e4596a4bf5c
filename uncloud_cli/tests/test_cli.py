"""The CLI against a live test server over real HTTP (pytest-django's live_server, httpx in the CLI):
nothing here goes through Django's test client."""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from accounts import actions as account_actions
from accounts.tests.conftest import enrol_totp, totp_code
from agents.choices import HostTransport
from agents.models import Host, Operation
from uncloud_cli.errors import EXIT_API, EXIT_CONNECTION, EXIT_OPERATION_FAILED, EXIT_TIMEOUT, EXIT_USAGE
from uncloud_cli.main import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    path = tmp_path / "cli" / "config.json"
    monkeypatch.setenv("UNCLOUD_CONFIG", str(path))
    for name in ("UNCLOUD_URL", "UNCLOUD_TOKEN", "UNCLOUD_CONTEXT"):
        monkeypatch.delenv(name, raising=False)
    return path


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(arg) for arg in args], input=input, catch_exceptions=False)


@pytest.fixture
def alice_cli(live_server, transactional_db, config_file):
    """alice (owner of a project) with a stored context: URL of the live server and a token."""
    alice = account_actions.do_create_user("alice", "alice-password-1")
    _, token = account_actions.do_create_token(alice, "cli")
    assert run("context", "set", "test", "--url", live_server.url, "--token", token).exit_code == 0
    return alice


def test_help_needs_neither_django_nor_httpx():
    code = ("import sys; sys.argv = ['uncloud', '--help']\n"
            "from uncloud_cli import main\n"
            "try:\n    main.main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'httpx', 'yaml')), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                          env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"})
    assert "vms" in done.stdout and done.stderr.strip() == "[]"


def test_the_console_script_is_declared_and_the_wheel_holds_only_the_cli(tmp_path):
    # Built from a copy: an in-tree build would write build/ and *.egg-info into the checkout.
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", "var", ".git", "__pycache__", "node_modules"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(source)], check=True, capture_output=True, cwd=tmp_path)
    wheel = next(tmp_path.glob("uncloud-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
        metadata = next(archive.read(n).decode() for n in names if n.endswith("METADATA"))
    assert "uncloud = uncloud_cli.main:main" in entry_points
    assert {name.split("/")[0] for name in names if not name.startswith("uncloud-")} == {"uncloud_cli"}
    requires = {line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist")}
    assert requires == {"click==8.5.1", "httpx==0.29.0", "PyYAML==6.0.4"}


def test_login_asks_password_and_code_and_stores_the_token_mode_600(live_server, transactional_db, config_file):
    dora = account_actions.do_create_user("dora", "dora-password-1")
    device, _ = enrol_totp(dora)
    result = run("login", "--url", live_server.url, "--name", "lab",
                 input=f"dora\ndora-password-1\n{totp_code(device, steps_ahead=1)}\n")
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    stored = json.loads(config_file.read_text())
    assert stored["current"] == "lab" and stored["contexts"]["lab"]["token"].startswith("uc_")
    # The stored token works for the next command.
    assert run("projects", "list", "-o", "json").exit_code == 0


def test_login_with_a_wrong_code_fails_and_stores_nothing(live_server, transactional_db, config_file):
    dora = account_actions.do_create_user("dora", "dora-password-1")
    enrol_totp(dora)
    result = run("login", "--url", live_server.url, "--username", "dora", "--password", "dora-password-1",
                 "--otp", "000000")
    assert result.exit_code == EXIT_API and "code" in result.output.lower()
    assert not config_file.exists()


def test_environment_overrides_the_context(alice_cli, monkeypatch):
    monkeypatch.setenv("UNCLOUD_TOKEN", "uc_not-a-token")
    result = run("vms", "list")
    assert result.exit_code == EXIT_API and "401" in result.output


def test_a_vm_created_listed_as_json_shown_and_deleted(alice_cli):
    created = run("vms", "create", "web1", "--cores", 2, "--memory", "1GiB", "--disk", "10G", "--empty-disk",
                  "-o", "json")
    assert created.exit_code == 0, created.output
    vm = json.loads(created.stdout)
    assert vm["name"] == "web1" and vm["memory_mib"] == 1024 and vm["cores"] == 2

    listed = json.loads(run("vms", "list", "-o", "json").stdout)
    assert [row["uuid"] for row in listed] == [vm["uuid"]]
    assert run("vms", "list", "-o", "value", "-c", "name,cores").stdout == "web1\t2\n"
    table = run("vms", "list").stdout.splitlines()
    assert table[0].split()[:3] == ["UUID", "NAME", "STATUS"] and "web1" in table[1]
    shown = yaml.safe_load(run("vms", "show", "web1", "-o", "yaml").stdout)  # by name
    assert shown["uuid"] == vm["uuid"]
    assert run("vms", "list", "-c", "nope").exit_code == EXIT_USAGE

    duplicate = run("vms", "create", "web1", "--empty-disk")
    assert duplicate.exit_code == EXIT_API and "409" in duplicate.output and "web1" in duplicate.output
    deleted = run("vms", "delete", "web1")
    assert deleted.exit_code == 0, deleted.output
    assert json.loads(run("vms", "show", vm["uuid"], "-o", "json").stdout)["desired_state"] == "deleted"
    assert run("vms", "show", "nosuch").exit_code == EXIT_API


def test_wait_follows_the_operation_and_exit_codes_say_how_it_ended(alice_cli):
    # No worker runs here: the create's operation stays pending, and --wait gives up with the timeout code.
    created = run("vms", "create", "web1", "--empty-disk", "--wait", "--wait-timeout", 1, "-o", "json")
    assert created.exit_code == EXIT_TIMEOUT and "vm.create: pending" in created.stderr
    vm = json.loads(run("vms", "show", "web1", "-o", "json").stdout)
    operation = Operation.objects.get(target_uuid=vm["uuid"], kind="vm.create")
    waited = run("operations", "wait", operation.uuid, "--wait-timeout", 1)
    assert waited.exit_code == EXIT_TIMEOUT and "still pending" in waited.output
    Operation.objects.filter(pk=operation.pk).update(state="failed", error="qemu: no KVM here")
    failed = run("operations", "wait", operation.uuid)
    assert failed.exit_code == EXIT_OPERATION_FAILED and "qemu: no KVM here" in failed.output
    Operation.objects.filter(pk=operation.pk).update(state="succeeded", error="")
    assert run("operations", "wait", operation.uuid, "-o", "value", "-c", "state").stdout == "succeeded\n"


def test_resources_by_name_and_the_firewall(alice_cli, tmp_path):
    key_file = tmp_path / "id.pub"
    key_file.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1L0f0dB4JqZ1nlMHVzrb6R2q1zwI0iNQ7DP9BYbJt a@b\n")
    assert run("ssh-keys", "create", "laptop", key_file).exit_code == 0
    created = run("vms", "create", "web1", "--empty-disk", "--ssh-key", "laptop", "--stopped", "-o", "json")
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["status"] == "stopped"
    rules = run("vms", "firewall", "set", "web1", "--rule", "tcp:22", "--rule", "udp:5000-5010@2001:db8::/32",
                "-o", "json")
    assert rules.exit_code == 0, rules.output
    assert [(r["protocol"], r["port_min"], r["port_max"]) for r in json.loads(rules.stdout)] == [
        ("tcp", 22, 22), ("udp", 5000, 5010)]
    assert "5010" in run("vms", "firewall", "show", "web1").output


def test_no_server_and_no_context_are_exit_code_5(config_file):
    assert run("vms", "list").exit_code == EXIT_CONNECTION
    assert run("--url", "http://127.0.0.1:9", "vms", "list").exit_code == EXIT_CONNECTION


def test_completion_script():
    result = run("completion", "bash")
    assert result.exit_code == 0 and "_UNCLOUD_COMPLETE" in result.output


@pytest.mark.worker
def test_wait_follows_a_real_operation_run_by_a_real_worker(celery_processes, live_server, config_file):
    """A staff host check, run by a Celery worker through Redis: --wait shows it to its end."""
    processes = celery_processes()
    processes.worker()
    staff = account_actions.do_create_user("ops", "ops-password-1", is_staff=True)
    _, token = account_actions.do_create_token(staff, "cli")
    assert run("context", "set", "ops", "--url", live_server.url, "--token", token).exit_code == 0
    with tempfile.TemporaryDirectory(prefix="uc-", dir="/tmp") as state_dir:  # short: unix socket paths
        good = Host.objects.create(name="local", transport=HostTransport.LOCAL, state_dir=state_dir)
        checked = run("hosts", "check", good.uuid, "--wait", "--wait-timeout", 120, "-o", "json")
        assert checked.exit_code == 0, checked.output
        assert json.loads(checked.stdout)["state"] == "succeeded"
        assert "host.check" in checked.stderr  # the progress lines
    # An SSH host nobody listens for: the check fails, and --wait says so with exit code 3.
    bad = Host.objects.create(name="nowhere", transport=HostTransport.SSH, ssh_address="127.0.0.1", ssh_port=9,
                              state_dir="/tmp/uc-nowhere")
    failed = run("hosts", "check", bad.uuid, "--wait", "--wait-timeout", 300)
    assert failed.exit_code == EXIT_OPERATION_FAILED, failed.output
    assert "failed" in failed.stderr


def test_a_member_is_invited_and_accepts(alice_cli, live_server, monkeypatch):
    bob = account_actions.do_create_user("bob", "bob-password-1")
    _, bob_token = account_actions.do_create_token(bob, "cli")
    project = json.loads(run("projects", "list", "-o", "json").stdout)[0]
    invited = run("projects", "invite", project["uuid"], "bob", "-o", "json")
    assert invited.exit_code == 0, invited.output
    assert [row["username"] for row in json.loads(run("projects", "invitations", project["uuid"],
                                                         "-o", "json").stdout)] == ["bob"]
    monkeypatch.setenv("UNCLOUD_TOKEN", bob_token)
    invitation = json.loads(run("invitations", "list", "-o", "json").stdout)[0]
    assert invitation["project"] == project["uuid"]
    assert run("invitations", "accept", invitation["uuid"]).exit_code == 0
    monkeypatch.delenv("UNCLOUD_TOKEN")
    assert "bob" in json.loads(run("projects", "show", project["uuid"], "-o", "json").stdout)["members"]


def test_image_upload_streams_with_progress(alice_cli, tmp_path, settings):
    settings.UNCLOUD_IMAGE_UPLOAD_DIR = tmp_path / "uploads"
    settings.UNCLOUD_IMAGE_STORE_DIR = tmp_path / "store"
    image = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    uploaded = run("images", "upload", "mine", image, "-o", "json")
    assert uploaded.exit_code == 0, uploaded.output
    body = json.loads(uploaded.stdout)
    assert body["name"] == "mine" and body["status"] == "validating"
    assert "100% of" in uploaded.stderr


def test_resize_and_a_staff_maintenance_round_trip(alice_cli, live_server, monkeypatch):
    assert run("vms", "create", "web1", "--empty-disk", "--stopped").exit_code == 0
    resized = run("vms", "resize", "web1", "--cores", 2, "--memory", "2GiB", "-o", "json")
    assert resized.exit_code == 0, resized.output
    assert (json.loads(resized.stdout)["cores"], json.loads(resized.stdout)["memory_mib"]) == (2, 2048)
    assert run("vms", "resize", "web1").exit_code == EXIT_USAGE
    assert run("vms", "resize", "web1", "--disk", "1G").exit_code == EXIT_API  # disks only grow

    staff = account_actions.do_create_user("sam", "sam-password-1", is_staff=True)
    _, token = account_actions.do_create_token(staff, "cli")
    monkeypatch.setenv("UNCLOUD_URL", live_server.url)
    monkeypatch.setenv("UNCLOUD_TOKEN", token)
    host = Host.objects.create(name="hv9", transport=HostTransport.SSH, ssh_address="hv9.example", cores=8,
                               memory_mib=8192, disk_gib=100)
    drain = run("hosts", "maintenance", host.uuid, "-o", "json")
    assert drain.exit_code == 0, drain.output
    assert json.loads(drain.stdout)["kind"] == "host.drain"
    host.refresh_from_db()
    assert host.status == "draining"
    enabled = run("hosts", "enable", host.uuid, "-o", "value", "-c", "status")
    assert enabled.exit_code == 0 and enabled.stdout == "enabled\n"


def test_domains_create_set_verify_and_delete(alice_cli):
    from tests.lab.controlplane import public_network

    public_network()
    assert run("vms", "create", "web1", "--empty-disk", "--stopped").exit_code == 0
    created = run("domains", "create", "WWW.Example.org", "web1", "-o", "json")
    assert created.exit_code == 0, created.output
    domain = json.loads(created.stdout)
    assert (domain["name"], domain["status"]) == ("www.example.org", "pending")
    assert run("domains", "create", "www.example.org", "web1").exit_code == EXIT_API  # taken
    listed = run("domains", "list", "-o", "value", "-c", "name")
    assert listed.exit_code == 0 and listed.stdout == "www.example.org\n"
    changed = run("domains", "set", "www.example.org", "--proxy-protocol", "-o", "value", "-c", "proxy_protocol")
    assert changed.exit_code == 0 and changed.stdout.strip() == "yes", changed.output
    verified = run("domains", "verify", "www.example.org")
    assert verified.exit_code == EXIT_API and "under way" in verified.output  # no worker runs its first proof
    assert run("domains", "delete", "www.example.org").exit_code == 0
    assert run("domains", "list", "-o", "value", "-c", "name").stdout == ""
