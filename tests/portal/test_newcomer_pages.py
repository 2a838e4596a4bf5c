"""What a new user saw wrong in the portal and the admin: the create form's defaults and its SSH key
link, one price format, networks to attach to, operations that name what they work on, sizes in
human units, admin labels."""

import re

import pytest

from accounts import actions as account_actions
from accounts.tests.test_admin import staff_client  # noqa: F401  (the fixture)
from accounts.units import human_mib
from images.choices import ImageStatus
from images.models import Image
from networks import actions as network_actions
from networks.models import PrefixPool
from vms import actions as vm_actions


@pytest.fixture
def public_network(db):
    PrefixPool.objects.create(prefix="2001:db8:100::/56")
    return network_actions.do_create_public_network(None, "public")


def selected_image(page: str) -> str | None:
    select = re.search(r'<select name="image"[^>]*>(.*?)</select>', page, re.S).group(1)
    found = re.search(r'<option value="([^"]*)" selected>', select)
    return found and found.group(1)


def test_the_create_form_preselects_an_image_that_boots(client, alice, alice_project, settings):
    client.force_login(alice)
    assert not selected_image(client.get("/vms/new/").content.decode())  # no image at all: empty disk
    Image.objects.create(project=alice_project, name="golden", status=ImageStatus.AVAILABLE)
    Image.objects.create(name="broken", status=ImageStatus.REJECTED)
    debian = Image.objects.create(name="debian-12", status=ImageStatus.AVAILABLE)
    demo = Image.objects.create(name="uncloud-demo", status=ImageStatus.AVAILABLE)
    settings.UNCLOUD_DEFAULT_IMAGE = ""
    assert selected_image(client.get("/vms/new/").content.decode()) == str(debian.uuid)  # first public one
    settings.UNCLOUD_DEFAULT_IMAGE = "uncloud-demo"
    assert selected_image(client.get("/vms/new/").content.decode()) == str(demo.uuid)  # the site's default


def test_the_create_form_links_to_adding_an_ssh_key(client, alice):
    client.force_login(alice)
    page = client.get("/vms/new/").content.decode()
    assert re.search(r'<a href="/ssh-keys/"[^>]*>Add a key</a>', page)


def test_the_ipv4_price_reads_as_on_the_create_form(client, alice, alice_project, public_network):
    vm, _ = vm_actions.do_create_vm(alice, alice_project, name="web1", cores=1, memory_mib=512, disk_mib=2048)
    client.force_login(alice)
    form = client.get("/vms/new/").content.decode()
    page = client.get(f"/vms/{vm.uuid}/networking/").content.decode()
    # billing's catalogue: IPv4 2.00 a month, Swiss VAT 8.1 % (a new account's address is in CH).
    assert "An IPv4 address, if you add one: CHF 2.16 per month" in form
    assert "It costs CHF 2.16 per month (incl. 8.1% VAT)." in page
    assert "2.000000" not in page


def test_attach_to_offers_only_networks_the_vm_is_not_on(client, alice, alice_project, public_network):
    backend = network_actions.do_create_network(alice, alice_project, "backend")
    vm, _ = vm_actions.do_create_vm(alice, alice_project, name="web1", cores=1, memory_mib=512, disk_mib=2048)
    client.force_login(alice)
    page = client.get(f"/vms/{vm.uuid}/networking/").content.decode()
    select = re.search(r'<select name="network" id="attach-network"[^>]*>(.*?)</select>', page, re.S).group(1)
    assert str(backend.uuid) in select and str(public_network.uuid) not in select
    both, _ = vm_actions.do_create_vm(alice, alice_project, name="web2", cores=1, memory_mib=512, disk_mib=2048,
                                      networks=[public_network, backend])
    page = client.get(f"/vms/{both.uuid}/networking/").content.decode()
    assert 'id="attach-network"' not in page and "is on every network it may join" in page


def test_the_dashboard_names_what_operations_work_on_and_writes_sizes_for_people(client, alice, alice_project,
                                                                                  public_network):
    vm, _ = vm_actions.do_create_vm(alice, alice_project, name="web1", cores=2, memory_mib=2048, disk_mib=35840)
    account_actions.do_set_quota(None, alice_project, quota_disk_mib=512000, quota_memory_mib=1536 * 1024)
    client.force_login(alice)
    page = client.get("/").content.decode()
    operations = page[page.index("Recent operations"):]
    assert f'<a href="/vms/{vm.uuid}/">web1</a>' in operations
    assert "35 GiB of 500 GiB" in page and "2 GiB of 1.5 TiB" in page
    assert "MiB of" not in page


def test_human_sizes():
    assert [human_mib(value) for value in (None, 0, 512, 1024, 1536, 35840, 512000, 1024**2, 3 * 1024**2 // 2)] == [
        "—", "0 MiB", "512 MiB", "1 GiB", "1.5 GiB", "35 GiB", "500 GiB", "1 TiB", "1.5 TiB"]


def test_vm_pages_write_sizes_for_people(client, alice, alice_project, public_network):
    vm, _ = vm_actions.do_create_vm(alice, alice_project, name="web1", cores=1, memory_mib=512, disk_mib=20480)
    client.force_login(alice)
    detail = client.get(f"/vms/{vm.uuid}/").content.decode()
    assert "<td>512 MiB</td>" in detail and "web1-root: 20 GiB" in detail
    assert "512 MiB" in client.get("/vms/").content.decode()


@pytest.mark.django_db
def test_admin_labels_read_as_words(staff_client):  # noqa: F811
    page = staff_client.get("/admin/").content.decode()
    for label in ("NICs", "VAT rates", "API tokens", "Suspended VMs"):
        assert f">{label}</a>" in page, label
    for raw in ("Nics", "Vat rates", "Api tokens", "Suspended vms"):
        assert f">{raw}</a>" not in page, raw
