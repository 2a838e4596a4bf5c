"""The VM create form shows the monthly price (billing.pricing through UNCLOUD_VM_PRICE_FUNCTION) without JS.

Catalogue of billing's migration 0002: 5.00 per core, 2.50 per GiB memory, 0.10 per GiB disk, IPv4 2.00
a month; Swiss VAT 8.1 % for an address in CH (the default of a new billing account).
"""

import re

from billing.actions import account_of_user, do_update_billing_address


def _price(page: str) -> str:
    return re.search(r'id="price-total">([^<]*)<', page).group(1)


def test_the_form_shows_the_price_of_its_default_size_and_the_unit_prices(client, alice):
    client.force_login(alice)
    page = client.get("/vms/new/").content.decode()
    # 1 core, 1 GiB, 10 GiB: 5.00 + 2.50 + 1.00 = 8.50, + 0.69 VAT
    assert _price(page) == "CHF 9.19"
    assert "(incl. 8.1% VAT)" in page
    assert "CHF 5.00 per core, 2.50 per GiB memory, 0.10 per GiB disk per month, excl. VAT" in page
    assert "An IPv4 address, if you add one: CHF 2.16 per month" in page
    assert 'data-price-url="/api/v1/prices/vm/"' in page


def test_a_refused_form_shows_the_price_of_the_submitted_size(client, alice, alice_project):
    client.force_login(alice)
    page = client.post("/vms/new/", {"project": str(alice_project.uuid), "name": "Not_A_Hostname", "cores": 2,
                                     "memory": "2GiB", "disk": "20G"}).content.decode()
    assert "A VM name is a hostname" in page
    assert _price(page) == "CHF 18.38"  # 17.00 + 1.38 VAT


def test_invalid_sizes_show_no_price_but_their_errors(client, alice, alice_project):
    client.force_login(alice)
    page = client.post("/vms/new/", {"project": str(alice_project.uuid), "name": "web2", "cores": 1,
                                     "memory": "lots", "disk": "20G"}).content.decode()
    assert "is not a size" in page
    assert _price(page) == "–"


def test_a_member_sees_the_price_with_the_owners_vat(client, alice, bob, alice_project):
    do_update_billing_address(alice, account_of_user(alice), name="Alice GmbH", postal_code="10115", city="Berlin",
                              country="DE")
    client.force_login(bob)
    page = client.post("/vms/new/", {"project": str(alice_project.uuid), "name": "Bad_Name", "cores": 2,
                                     "memory": "2GiB", "disk": "20G"}).content.decode()
    assert _price(page) == "CHF 20.23"  # 17.00 + 19 % German VAT
    assert "(incl. 19% VAT)" in page


def test_a_stranger_cannot_price_in_someone_elses_project(client, alice_project, charlie):
    client.force_login(charlie)
    page = client.post("/vms/new/", {"project": str(alice_project.uuid), "name": "web3", "cores": 2,
                                     "memory": "2GiB", "disk": "20G"}).content.decode()
    assert "Select a valid choice" in page
    assert _price(page) == "–"


def test_without_a_price_function_the_form_says_so(client, alice, settings):
    settings.UNCLOUD_VM_PRICE_FUNCTION = ""
    client.force_login(alice)
    page = client.get("/vms/new/").content.decode()
    assert 'id="price-total"' not in page and "UNCLOUD_VM_PRICE_FUNCTION" in page
