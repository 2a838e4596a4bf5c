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


def test_add_and_remove_member(api, alice_project, charlie):
    url = f"/api/v1/projects/{alice_project.uuid}/members/"
    assert api["bob"].post(url, {"username": "charlie"}, format="json").status_code == 403
    response = api["alice"].post(url, {"username": "charlie"}, format="json")
    assert response.status_code == 201 and "charlie" in response.json()["members"]
    assert api["charlie"].get(f"/api/v1/projects/{alice_project.uuid}/").status_code == 200
    assert api["alice"].post(url, {"username": "charlie"}, format="json").status_code == 409
    assert api["alice"].post(url, {"username": "nobody"}, format="json").status_code == 400
    assert api["alice"].delete(f"{url}charlie/").status_code == 204
    assert api["charlie"].get(f"/api/v1/projects/{alice_project.uuid}/").status_code == 404


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
