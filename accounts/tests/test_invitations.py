"""Issue 23.7 and 13: invitations are accepted by the invitee only, never by whoever holds the link."""

import re

from django.core import mail

from accounts import actions
from accounts.models import Identity


def _invite(client, project, who):
    return client.post(f"/projects/{project.uuid}/", {"who": who}, follow=True)


def _link():
    return re.search(r"http://testserver(/invitations/\S+/)", mail.outbox[-1].body).group(1)


def test_the_link_is_no_bearer_key(client, alice, alice_project, charlie):
    client.force_login(alice)
    _invite(client, alice_project, "dora@example.com")
    link = _link()
    # charlie got hold of the link (forwarded mail, shared screen): it does not let him in.
    client.force_login(charlie)
    refused = client.get(link, follow=True)
    assert b"not open for your account" in refused.content
    invitation = alice_project.invitations.get()
    assert client.post(f"/invitations/{invitation.uuid}/accept/").status_code == 404
    assert not alice_project.members.filter(pk=charlie.pk).exists()
    # dora signs up with the invited address, verifies it, and accepts.
    client.logout()
    client.post("/signup/", {"username": "dora", "email": "Dora@Example.com", "password1": "a-long-passphrase-9",
                             "password2": "a-long-passphrase-9"})
    verify = re.search(r"http://testserver(/signup/verify/\S+)", mail.outbox[-1].body).group(1)
    client.get(verify)
    client.post("/login/", {"username": "dora", "password": "a-long-passphrase-9"})
    page = client.get(link)
    assert page.status_code == 200 and b"Accept invitation" in page.content
    assert page.context["invitation"].project == alice_project
    assert client.post(f"/invitations/{invitation.uuid}/accept/").status_code == 302
    assert alice_project.members.filter(username="dora").exists()


def test_an_unverified_address_accepts_nothing(client, alice, alice_project, charlie):
    charlie.email = "charlie@example.com"
    charlie.save()
    Identity.objects.filter(user=charlie).update(email_verified=None)  # e.g. staff typed the address in
    client.force_login(alice)
    _invite(client, alice_project, "charlie@example.com")
    client.force_login(charlie)
    assert b"not open for your account" in client.get(_link(), follow=True).content
    assert not actions.invitations_for(charlie).exists()


def test_portal_invites_by_username_with_one_answer_and_the_invitee_accepts(client, alice, alice_project, bob,
                                                                             charlie, staff):
    client.force_login(alice)
    known = _invite(client, alice_project, "charlie")
    unknown = _invite(client, alice_project, "nobody-here")
    said = [m.message.replace("charlie", "NAME").replace("nobody-here", "NAME")
            for m in (list(known.context["messages"])[0], list(unknown.context["messages"])[0])]
    assert said[0] == said[1]
    _invite(client, alice_project, "staff")
    assert not alice_project.members.filter(pk__in=[charlie.pk, staff.pk]).exists()
    # charlie finds it on his projects page and accepts; bob (member) cannot invite; strangers get 404.
    client.force_login(charlie)
    page = client.get("/projects/")
    assert b"Invitations for you" in page.content
    invitation = page.context["invitations"][0]
    assert invitation.project == alice_project
    client.post(f"/invitations/{invitation.uuid}/accept/")
    assert alice_project.members.filter(pk=charlie.pk).exists()
    client.force_login(bob)
    assert client.post(f"/projects/{alice_project.uuid}/", {"who": "mallory"}).status_code == 403
    assert client.post(f"/invitations/{invitation.uuid}/decline/").status_code == 404
    assert [i.project for i in actions.invitations_for(staff)] == [alice_project]  # staff decide themselves
