"""Resizing a VM in the portal shows the new monthly price before anything changes; staff resize
from the admin the same way. Prices as in test_vm_price.py (billing's catalogue, Swiss VAT)."""

import re

from accounts.tests.test_admin import staff_client  # noqa: F401  (the fixture)
from agents.models import Host, Operation
from billing.models import Order
from vms.actions import do_create_vm
from vms.models import VM


def stopped_vm(owner, project):
    vm, _ = do_create_vm(owner, project, name="grow", cores=1, memory_mib=1024, disk_mib=10240)
    host = Host.objects.create(name="hv1", ssh_address="hv1.example", cores=8, memory_mib=8192, disk_gib=100)
    VM.objects.filter(pk=vm.pk).update(status="stopped", desired_state="stopped", host=host)
    Operation.objects.filter(target_uuid=vm.uuid).update(state="succeeded")  # no worker here: as if it ran
    return vm


def new_price(page: str) -> str | None:
    found = re.search(r'id="price-new">([^<]*)<', page)
    return found.group(1) if found else None


def test_the_new_price_is_shown_before_the_resize_is_confirmed(client, alice, bob, charlie, alice_project):
    vm = stopped_vm(alice, alice_project)
    url = f"/vms/{vm.uuid}/resize/"
    bigger = {"cores": 2, "memory": "2GiB", "disk": "20G"}
    client.force_login(charlie)
    assert client.get(url).status_code == 404
    assert client.post(url, {**bigger, "priced": "2:2048:20480"}).status_code == 404

    client.force_login(alice)
    assert f'href="{url}"' in client.get(f"/vms/{vm.uuid}/").content.decode()
    page = client.get(url).content.decode()
    assert 'id="price-now">CHF 9.19<' in page and new_price(page) is None and "Confirm resize" not in page

    page = client.post(url, bigger).content.decode()  # the price first
    assert new_price(page) == "CHF 18.38" and "Confirm resize" in page and 'value="2:2048:20480"' in page
    assert VM.objects.get(pk=vm.pk).cores == 1 and Order.objects.filter(resource_uuid=vm.uuid).count() == 1
    # A confirmation of another size than the one priced shows that size's price, and changes nothing.
    page = client.post(url, {**bigger, "cores": 4, "priced": "2:2048:20480"}).content.decode()
    assert new_price(page) == "CHF 29.19" and VM.objects.get(pk=vm.pk).cores == 1  # 27.00 + 8.1 %
    page = client.post(url, {**bigger, "disk": "5G", "priced": "2:2048:5120"}).content.decode()
    assert "Disks only grow" in page and VM.objects.get(pk=vm.pk).cores == 1

    client.force_login(bob)  # a member of the project
    response = client.post(url, {**bigger, "priced": "2:2048:20480"})
    assert response.status_code == 302 and response["Location"] == f"/vms/{vm.uuid}/"
    vm.refresh_from_db()
    assert (vm.cores, vm.memory_mib, vm.disks.get(role="root").size_mib) == (2, 2048, 20480)
    old, new = Order.objects.filter(resource_uuid=vm.uuid).order_by("id")
    assert new.replaces_id == old.pk and old.ends_at == new.starts_at


def test_staff_resize_from_the_admin_after_seeing_the_prices(staff_client, alice, alice_project):  # noqa: F811
    vm = stopped_vm(alice, alice_project)
    client = staff_client
    chosen = {"action": "resize_vms", "_selected_action": [vm.pk]}
    page = client.post("/admin/vms/vm/", chosen).content.decode()
    assert "Show the new prices" in page and 'value="1"' in page  # the current cores
    page = client.post("/admin/vms/vm/", {**chosen, "size": "1", "cores": 2, "memory": "2GiB",
                                          "disk": "20G"}).content.decode()
    assert "CHF 18.38 per month" in page and "Confirm resize" in page
    assert VM.objects.get(pk=vm.pk).cores == 1
    response = client.post("/admin/vms/vm/", {**chosen, "size": "1", "cores": 2, "memory": "2GiB", "disk": "20G",
                                              "priced": "2:2048:20480"})
    assert response.status_code == 302
    assert VM.objects.get(pk=vm.pk).cores == 2
    assert Order.objects.filter(resource_uuid=vm.uuid, ends_at__isnull=True).get().cores == 2
