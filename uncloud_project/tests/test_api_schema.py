"""The API's contract with its schema (issue 13): empty PATCHes, nullable fields, documented error
answers, an oversized body. The generated-request run over every operation is tests/contract/."""

import json

import pytest
from drf_spectacular.generators import SchemaGenerator

from networks.models import PrefixPool


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


@pytest.mark.parametrize("component, field", [
    ("VM", "host"), ("VM", "image"), ("Disk", "vm"), ("Disk", "image"), ("Network", "project"),
    ("Order", "replaces"), ("Payment", "bill"),
])
def test_nullable_fields_are_nullable_in_the_schema(schema, component, field):
    assert schema["components"]["schemas"][component]["properties"][field].get("nullable") is True


def test_error_answers_are_documented(schema):
    paths = schema["paths"]
    create_vm = paths["/api/v1/vms/"]["post"]["responses"]
    assert {"400", "401", "403", "409", "413", "422", "429"} <= set(create_vm)
    show_vm = paths["/api/v1/vms/{uuid}/"]["get"]["responses"]
    assert {"401", "403", "404", "429"} <= set(show_vm) and "409" not in show_vm and "413" not in show_vm
    assert "400" in paths["/api/v1/vms/"]["get"]["responses"]  # filters are query parameters
    assert "404" in paths["/api/v1/projects/{uuid}/"]["patch"]["responses"]
    assert show_vm["404"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_list_filters_are_in_the_schema(schema):
    parameters = {p["name"] for p in schema["paths"]["/api/v1/vms/"]["get"]["parameters"]}
    assert {"status", "desired_state", "name", "limit", "offset"} <= parameters


def test_empty_patch_of_a_project_changes_nothing(api, alice_project):
    response = api["alice"].patch(f"/api/v1/projects/{alice_project.uuid}/", {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["name"] == alice_project.name
    assert api["charlie"].patch(f"/api/v1/projects/{alice_project.uuid}/", {}, format="json").status_code == 404


def test_empty_patch_of_a_network_changes_nothing(api, alice_project):
    PrefixPool.objects.create(prefix="2001:db8:200::/56")
    network = api["alice"].post("/api/v1/networks/", {"name": "backend"}, format="json").json()
    response = api["alice"].patch(f"/api/v1/networks/{network['uuid']}/", {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["name"] == "backend"
    assert api["charlie"].patch(f"/api/v1/networks/{network['uuid']}/", {}, format="json").status_code == 404


def test_a_body_over_the_limit_is_a_json_413_that_says_the_limit(api, settings):
    body = json.dumps({"name": "x" * (10 * 1024 * 1024)})
    response = api["alice"].generic("POST", "/api/v1/networks/", body, content_type="application/json")
    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert response.json()["limit_bytes"] == settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in response.json()["detail"]


def test_a_path_that_matches_no_route_is_a_json_404_under_api(api, client):
    response = api["alice"].get("/api/v1/ssh-keys/not-a-uuid/")  # the route wants a UUID
    assert response.status_code == 404 and response.json() == {"detail": "Not found."}
    assert "text/html" in client.get("/no-such-page/")["Content-Type"]  # the portal keeps its page


@pytest.mark.parametrize("path", ["/api/v1/nics/?ipv6_address=projects", "/api/v1/ipv4-addresses/?address=x"])
def test_an_address_filter_that_is_no_address_is_400(api, path):
    response = api["alice"].get(path)
    assert response.status_code == 400, response.content


def test_every_list_is_paginated_the_same_way(schema):
    lists = 0
    for path, operations in schema["paths"].items():
        get = operations.get("get")
        if get is None or not get["operationId"].endswith("_list"):
            continue
        lists += 1
        parameters = {p["name"] for p in get.get("parameters", []) if p["in"] == "query"}
        assert {"limit", "offset"} <= parameters, path
        body = get["responses"]["200"]["content"]["application/json"]["schema"]
        component = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
        assert {"count", "next", "previous", "results"} <= set(component["properties"]), path
    assert lists >= 12
