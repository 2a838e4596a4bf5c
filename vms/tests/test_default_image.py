"""A VM created without naming an image boots the site's default image, or is refused (400): an
empty disk with no install media boots nothing (the README's own example used to make one)."""

import pytest

from images.models import Image
from networks.actions import do_create_public_network
from networks.models import PrefixPool
from vms.models import VM

README_EXAMPLE = {"name": "web1", "cores": 2, "memory": "2GiB", "disk": "20G"}


@pytest.fixture
def public_network(db):
    PrefixPool.objects.create(prefix="2001:db8:100::/56")
    return do_create_public_network(None, "public")


@pytest.fixture
def demo_image(db):
    return Image.objects.create(name="uncloud-demo", status="available", virtual_size_bytes=64 * 1024**2)


def test_without_a_default_image_the_create_is_a_clear_400(api, public_network, demo_image, settings):
    settings.UNCLOUD_DEFAULT_IMAGE = ""
    response = api["alice"].post("/api/v1/vms/", README_EXAMPLE, format="json")
    assert response.status_code == 400
    assert "UNCLOUD_DEFAULT_IMAGE" in response.json()["image"][0]
    assert not VM.objects.exists()


def test_a_missing_or_unavailable_default_is_a_clear_400(api, public_network, demo_image, settings):
    settings.UNCLOUD_DEFAULT_IMAGE = "no-such-image"
    assert "'no-such-image' is not available" in api["alice"].post(
        "/api/v1/vms/", README_EXAMPLE, format="json").json()["image"][0]
    Image.objects.filter(pk=demo_image.pk).update(status="validating")
    settings.UNCLOUD_DEFAULT_IMAGE = "uncloud-demo"
    assert api["alice"].post("/api/v1/vms/", README_EXAMPLE, format="json").status_code == 400
    assert not VM.objects.exists()


def test_the_readme_example_boots_the_default_image(api, public_network, demo_image, alice_project, settings):
    settings.UNCLOUD_DEFAULT_IMAGE = "uncloud-demo"
    # A project's own image of the same name is not the site's default.
    Image.objects.create(name="uncloud-demo", project=alice_project, status="available")
    response = api["alice"].post("/api/v1/vms/", README_EXAMPLE, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["image"] == str(demo_image.uuid)
    vm = VM.objects.get(uuid=response.json()["uuid"])
    assert vm.disks.get(role="root").image == demo_image


def test_an_explicit_null_still_asks_for_an_empty_disk(api, public_network, demo_image, settings):
    settings.UNCLOUD_DEFAULT_IMAGE = "uncloud-demo"
    response = api["alice"].post("/api/v1/vms/", {**README_EXAMPLE, "image": None}, format="json")
    assert response.status_code == 201 and response.json()["image"] is None
