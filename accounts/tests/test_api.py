from datetime import timedelta

from django.utils import timezone
from rest_framework.test import APIClient

from accounts import actions
from accounts.models import APIToken
from accounts.tests.conftest import enrol_totp, totp_code


def test_projects_isolation(api, alice_project):
    url = f"/api/v1/projects/{alice_project.uuid}/"
    assert api["alice"].get(url).status_code == 200
    assert api["bob"].get(url).status_code == 200
    assert api["charlie"].get(url).status_code == 404
    assert api["charlie"].patch(url, {"name": "mine"}, format="json").status_code == 404
    assert api["charlie"].delete(url).status_code == 404
    names = [p["name"] for p in api["charlie"].get("/api/v1/projects/").json()["results"]]
    assert names == ["charlie's project"]


def test_member_cannot_rename_or_delete(api, alice_project):
    url = f"/api/v1/projects/{alice_project.uuid}/"
    assert api["bob"].patch(url, {"name": "bob's now"}, format="json").status_code == 403
    assert api["bob"].delete(url).status_code == 403
    assert api["alice"].patch(url, {"name": "renamed"}, format="json").json()["name"] == "renamed"


def test_members_join_by_accepting_an_invitation(api, alice_project, charlie):
    """Issue 13: nobody is added to a project without consent; the invitee accepts."""
    url = f"/api/v1/projects/{alice_project.uuid}/members/"
    assert api["bob"].post(url, {"username": "charlie"}, format="json").status_code == 403
    assert api["charlie"].post(url, {"username": "charlie"}, format="json").status_code == 404
    response = api["alice"].post(url, {"username": "charlie"}, format="json")
    assert response.status_code == 202 and response.json()["invitee"] == "charlie"
    assert api["charlie"].get(f"/api/v1/projects/{alice_project.uuid}/").status_code == 404  # not yet
    assert api["alice"].post(url, {"username": "charlie"}, format="json").status_code == 409  # already open
    assert api["alice"].post(url, {"username": "bob"}, format="json").status_code == 409  # a listed member
    mine = api["charlie"].get("/api/v1/invitations/").json()["results"]
    assert [(i["project"], i["invited_by"]) for i in mine] == [(str(alice_project.uuid), "alice")]
    # Only the invitee sees and accepts it.
    invitation = mine[0]["uuid"]
    assert api["bob"].get("/api/v1/invitations/").json()["results"] == []
    assert api["bob"].post(f"/api/v1/invitations/{invitation}/accept/").status_code == 404
    accepted = api["charlie"].post(f"/api/v1/invitations/{invitation}/accept/")
    assert accepted.status_code == 200 and "charlie" in accepted.json()["members"]
    assert api["charlie"].get(f"/api/v1/projects/{alice_project.uuid}/").status_code == 200
    assert api["charlie"].post(f"/api/v1/invitations/{invitation}/accept/").status_code == 404  # used
    assert api["alice"].delete(f"{url}charlie/").status_code == 204
    assert api["charlie"].get(f"/api/v1/projects/{alice_project.uuid}/").status_code == 404


def test_staff_are_not_added_without_consent(api, alice_project, staff):
    url = f"/api/v1/projects/{alice_project.uuid}/members/"
    assert api["alice"].post(url, {"username": "staff"}, format="json").status_code == 202
    assert not alice_project.members.filter(pk=staff.pk).exists()


def test_known_and_unknown_names_get_one_answer(api, alice_project, charlie):
    url = f"/api/v1/projects/{alice_project.uuid}/members/"
    known = api["alice"].post(url, {"username": "charlie"}, format="json")
    unknown = api["alice"].post(url, {"username": "nobody-here"}, format="json")
    assert known.status_code == unknown.status_code == 202
    assert set(known.json()) == set(unknown.json())
    assert api["alice"].post(url, {"email": "charlie@example.com"}, format="json").status_code == 202
    assert api["alice"].post(url, {"email": "ghost@example.com"}, format="json").status_code == 202
    assert api["alice"].post(url, {}, format="json").status_code == 400
    assert api["alice"].post(url, {"username": "x", "email": "x@example.com"}, format="json").status_code == 400
    listed = {i["invitee"] for i in api["alice"].get(f"/api/v1/projects/{alice_project.uuid}/invitations/").json()}
    assert listed == {"charlie", "nobody-here", "charlie@example.com", "ghost@example.com"}
    assert api["bob"].get(f"/api/v1/projects/{alice_project.uuid}/invitations/").status_code == 403
    assert api["charlie"].get(f"/api/v1/projects/{alice_project.uuid}/invitations/").status_code == 404


def test_declined_and_cancelled_invitations(api, alice_project, charlie):
    url = f"/api/v1/projects/{alice_project.uuid}/members/"
    first = api["alice"].post(url, {"username": "charlie"}, format="json").json()["uuid"]
    assert api["charlie"].post(f"/api/v1/invitations/{first}/decline/").status_code == 204
    assert api["charlie"].get("/api/v1/invitations/").json()["results"] == []
    second = api["alice"].post(url, {"username": "charlie"}, format="json").json()["uuid"]
    assert api["alice"].delete(f"/api/v1/projects/{alice_project.uuid}/invitations/{second}/").status_code == 204
    assert api["charlie"].post(f"/api/v1/invitations/{second}/accept/").status_code == 404
    assert not alice_project.members.filter(pk=charlie.pk).exists()


def test_create_project(api):
    response = api["charlie"].post("/api/v1/projects/", {"name": "side project"}, format="json")
    assert response.status_code == 201
    assert api["charlie"].post("/api/v1/projects/", {"name": "side project"}, format="json").status_code == 409
    assert api["charlie"].post("/api/v1/projects/", {"name": ""}, format="json").status_code == 400


def test_token_lifecycle(alice):
    anonymous = APIClient()
    assert anonymous.get("/api/v1/projects/").status_code == 401
    _, raw = actions.do_create_token(alice, "bootstrap")
    device, _ = enrol_totp(alice)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}", HTTP_X_OTP=totp_code(device, steps_ahead=1))
    response = client.post("/api/v1/tokens/", {"name": "laptop"}, format="json")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 201
    new_raw = response.json()["token"]
    listed = client.get("/api/v1/tokens/").json()["results"]
    assert {t["name"] for t in listed} == {"bootstrap", "laptop"}
    assert all("token" not in t and "key_hash" not in t for t in listed)

    laptop = APIClient()
    laptop.credentials(HTTP_AUTHORIZATION=f"Token {new_raw}")
    assert laptop.get("/api/v1/projects/").status_code == 200
    assert client.delete(f"/api/v1/tokens/{response.json()['uuid']}/").status_code == 204
    assert laptop.get("/api/v1/projects/").status_code == 401


def test_expired_and_garbage_tokens_are_401(alice):
    token, raw = actions.do_create_token(alice, "old")
    APIToken.objects.filter(pk=token.pk).update(expires=timezone.now() - timedelta(seconds=1))
    for header in (f"Bearer {raw}", "Bearer uc_nonsense", "Bearer", "Bearer a b", "Bearer \u00e9\u00e9"):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=header)
        assert client.get("/api/v1/projects/").status_code == 401, header


def test_tokens_isolation(api, alice):
    token, _ = actions.do_create_token(alice, "private")
    assert api["alice"].get(f"/api/v1/tokens/{token.uuid}/").status_code == 200
    assert api["bob"].get(f"/api/v1/tokens/{token.uuid}/").status_code == 404
    assert api["charlie"].delete(f"/api/v1/tokens/{token.uuid}/").status_code == 404
