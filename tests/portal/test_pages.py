"""Every portal page with alice (owner), bob (member) and charlie (stranger): strangers get 404."""

import re

import pytest
from django.core import mail

from accounts import actions as account_actions
from accounts.models import AuditEntry
from images.choices import ImageStatus
from images.models import Image
from networks import actions as network_actions
from networks.models import PrefixPool
from vms import actions as vm_actions
from vms.models import VM

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1L0f0dB4JqZ1nlMHVzrb6R2q1zwI0iNQ7DP9BYbJt alice@laptop"
XSS = "<script>alert(1)</script>"


@pytest.fixture
def world(alice, bob, charlie, alice_project):
    PrefixPool.objects.create(prefix="2001:db8:100::/56")
    network = network_actions.do_create_network(alice, alice_project, "backend")
    vm, _ = vm_actions.do_create_vm(alice, alice_project, name="web1", cores=1, memory_mib=512, disk_mib=2048,
                                    networks=[network])
    key = vm_actions.do_add_ssh_key(alice, alice_project, "alicekey", ED25519)
    image = Image.objects.create(project=alice_project, name="golden", status=ImageStatus.AVAILABLE)
    return {"vm": vm, "network": network, "key": key, "image": image, "project": alice_project}


def _pages(world):
    project = world["project"]
    return [
        f"/vms/{world['vm'].uuid}/", f"/networks/{world['network'].uuid}/", f"/images/{world['image'].uuid}/",
        f"/projects/{project.uuid}/", f"/projects/{project.uuid}/audit/",
    ]


def test_owner_and_member_see_pages_stranger_gets_404(client, world, alice, bob, charlie):
    for user in (alice, bob):
        client.force_login(user)
        for path in _pages(world):
            assert client.get(path).status_code == 200, (user, path)
    client.force_login(charlie)
    for path in _pages(world):
        assert client.get(path).status_code == 404, path


def test_lists_show_only_own_things(client, world, charlie):
    client.force_login(charlie)
    for path, secret in [("/vms/", b"web1"), ("/networks/", b"backend"), ("/ssh-keys/", b"alicekey"),
                         ("/images/", b"golden"), ("/projects/", b"alice&#x27;s project"), ("/", b"web1"),
                         ("/vms/status.json", str(world["vm"].uuid).encode())]:
        response = client.get(path)
        assert response.status_code == 200 and secret not in response.content, path


def test_member_sees_lists(client, world, bob):
    client.force_login(bob)
    assert b"web1" in client.get("/vms/").content
    assert b"alicekey" in client.get("/ssh-keys/").content
    assert str(world["vm"].uuid) in client.get("/vms/status.json").json()["vms"]


def test_stranger_cannot_act_on_others_things(client, world, charlie):
    client.force_login(charlie)
    vm, project = world["vm"], world["project"]
    for path in (f"/vms/{vm.uuid}/stop/", f"/vms/{vm.uuid}/delete/", f"/ssh-keys/{world['key'].uuid}/delete/",
                 f"/networks/{world['network'].uuid}/delete/", f"/projects/{project.uuid}/members/bob/remove/"):
        assert client.post(path).status_code == 404, path
    assert client.post(f"/projects/{project.uuid}/", {"who": "charlie"}).status_code == 404
    assert VM.objects.filter(pk=vm.pk).exists() and project.members.filter(username="bob").exists()
    # Choosing a stranger's project in a form is an invalid choice, not a way in.
    response = client.post("/vms/new/", {"project": str(project.uuid), "name": "evil", "cores": 1,
                                         "memory": "512M", "disk": "2G"})
    assert response.status_code == 200 and response.context["form"].errors["project"]
    response = client.post("/ssh-keys/", {"project": str(project.uuid), "name": "x", "public_key": ED25519})
    assert response.context["form"].errors["project"]


def test_member_cannot_manage_members(client, world, bob, charlie):
    client.force_login(bob)
    project = world["project"]
    assert client.post(f"/projects/{project.uuid}/", {"who": "charlie"}).status_code == 403
    # ...but may leave.
    assert client.post(f"/projects/{project.uuid}/members/bob/remove/").status_code == 302
    assert not project.members.filter(username="bob").exists()


def test_create_vm_and_key_through_the_portal(client, world, alice):
    client.force_login(alice)
    project = world["project"]
    response = client.post("/vms/new/", {"project": str(project.uuid), "name": "db1", "cores": 2, "memory": "1GiB",
                                         "disk": "4G", "ssh_keys": [str(world["key"].uuid)]})
    vm = VM.objects.get(name="db1")
    assert response.status_code == 302 and response["Location"] == f"/vms/{vm.uuid}/"
    assert vm.memory_mib == 1024 and list(vm.ssh_keys.all()) == [world["key"]]
    page = client.get(f"/vms/{vm.uuid}/")
    assert page.status_code == 200
    bad = client.post("/vms/new/", {"project": str(project.uuid), "name": "Bad_Name", "cores": 0, "memory": "lots",
                                    "disk": "4G"})
    assert set(bad.context["form"].errors) == {"name", "cores", "memory"}
    duplicate = client.post("/vms/new/", {"project": str(project.uuid), "name": "db1", "cores": 1, "memory": "512M",
                                          "disk": "2G"})
    assert b"already has a VM named" in duplicate.content


def test_quota_exceeded_is_a_clear_message_in_portal_and_4xx_in_api(client, world, alice, api):
    project = world["project"]
    account_actions.do_set_quota(alice, project, quota_vms=1)  # web1 uses it already
    client.force_login(alice)
    response = client.post("/vms/new/", {"project": str(project.uuid), "name": "db2", "cores": 1,
                                         "memory": "512M", "disk": "2G"})
    assert response.status_code == 200
    assert b"Quota of project" in response.content and b"VMs: 1 in use + 1 requested &gt; quota 1" in response.content
    answer = api["alice"].post("/api/v1/vms/", {"project": str(project.uuid), "name": "db2", "cores": 1,
                                                "memory": "512M", "disk": "2G", "image": None}, format="json")
    assert answer.status_code == 403 and "Quota" in answer.json()["detail"]
    assert not VM.objects.filter(name="db2").exists()


def test_ssh_keys_add_and_delete(client, world, alice):
    client.force_login(alice)
    bad = client.post("/ssh-keys/", {"project": str(world["project"].uuid), "name": "x", "public_key": "not a key"})
    assert bad.status_code == 200 and bad.context["form"].errors["public_key"]
    again = client.post("/ssh-keys/", {"project": str(world["project"].uuid), "name": "other", "public_key": ED25519})
    assert b"already in the project" in again.content
    assert client.post(f"/ssh-keys/{world['key'].uuid}/delete/").status_code == 302
    assert b"<td>alicekey</td>" not in client.get("/ssh-keys/").content


def test_networks_create_and_refuse_delete_in_use(client, world, alice):
    client.force_login(alice)
    response = client.post("/networks/", {"project": str(world["project"].uuid), "name": "frontend"})
    assert response.status_code == 302
    in_use = client.post(f"/networks/{world['network'].uuid}/delete/", follow=True)
    assert b"still used" in in_use.content


def test_vm_action_errors_are_messages(client, world, alice):
    client.force_login(alice)
    vm = world["vm"]
    response = client.post(f"/vms/{vm.uuid}/reboot/", follow=True)
    assert response.status_code == 200 and b"is busy: vm.create" in response.content
    assert client.post(f"/vms/{vm.uuid}/explode/").status_code == 404


def test_invitation_by_mail_for_a_classroom(client, world, alice, charlie):
    charlie.email = "charlie@example.com"
    charlie.save()
    project = world["project"]
    client.force_login(alice)
    client.post(f"/projects/{project.uuid}/", {"who": "charlie@example.com"})
    link = re.search(r"http://testserver(/invitations/\S+/)", mail.outbox[-1].body).group(1)
    assert b"charlie@example.com" in client.get(f"/projects/{project.uuid}/").content
    client.force_login(charlie)
    assert client.get(f"/projects/{project.uuid}/").status_code == 404
    page = client.get(link)
    invitation = page.context["invitation"]
    assert page.status_code == 200 and invitation.project == project
    assert client.post(f"/invitations/{invitation.uuid}/accept/").status_code == 302
    assert client.get(f"/projects/{project.uuid}/").status_code == 200
    assert client.get(link, follow=True).status_code == 200  # used: a message, no error
    assert AuditEntry.objects.filter(project=project, action="project.invite_accept").exists()


def test_audit_log_shows_who_did_what(client, world, alice, bob):
    client.force_login(bob)
    page = client.get(f"/projects/{world['project'].uuid}/audit/")
    assert b"vm.create" in page.content and b"sshkey.add" in page.content and b"alice" in page.content


def test_user_text_is_escaped_everywhere(client, world, alice, charlie):
    project = world["project"]
    account_actions.do_rename_project(alice, project, XSS)
    vm_actions.do_add_ssh_key(alice, project, XSS,
                              "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEtNGyWymNc9SmQ2NsIZMiCwEPA8bV5NfXqnIwqo7Tay x")
    network_actions.do_create_network(alice, project, XSS)
    Image.objects.filter(pk=world["image"].pk).update(description=XSS, name=XSS)
    client.force_login(alice)
    for path in ["/", "/vms/", f"/vms/{world['vm'].uuid}/", "/ssh-keys/", "/networks/", "/images/",
                 f"/images/{world['image'].uuid}/", "/projects/", f"/projects/{project.uuid}/",
                 f"/projects/{project.uuid}/audit/", "/account/"]:
        content = client.get(path).content
        assert b"<script>alert" not in content, path
    assert b"&lt;script&gt;" in client.get("/ssh-keys/").content


def test_every_form_carries_a_csrf_token(client, world, alice):
    client.force_login(alice)
    for path in ["/vms/new/", f"/vms/{world['vm'].uuid}/", "/ssh-keys/", "/networks/", "/images/upload/",
                 "/projects/", f"/projects/{world['project'].uuid}/", "/account/tokens/", "/account/otp/"]:
        content = client.get(path).content.decode()
        forms = re.findall(r"<form[^>]*method=\"post\"[^>]*>(.*?)</form>", content, re.S)
        assert forms, path
        assert all("csrfmiddlewaretoken" in form for form in forms), path


def test_post_without_csrf_token_is_refused(world, alice):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    assert strict.post(f"/ssh-keys/{world['key'].uuid}/delete/").status_code == 403


def test_no_template_turns_off_escaping():
    from pathlib import Path

    for template in Path(__file__).resolve().parents[2].joinpath("templates").rglob("*.html"):
        text = template.read_text()
        assert "autoescape off" not in text, template
        # |safe only on developer-written help texts (Django's password rules), never on user data.
        assert all(use == "field.help_text|safe" for use in re.findall(r"[\w.]+\|safe", text)), template
