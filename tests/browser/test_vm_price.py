"""The VM create form's price follows cores, memory and disk as they are typed (a few lines of JS asking
/api/v1/prices/vm/). Catalogue of billing's migration 0002, Swiss VAT 8.1 %."""

from playwright.sync_api import expect

from tests.browser.conftest import log_in


def test_the_price_updates_as_the_size_changes(page, shot, alice, alice_project):
    log_in(page, "alice", "alice-password-1")
    page.goto("/vms/new/")
    total = page.locator("#price-total")
    expect(total).to_have_text("CHF 9.19")  # rendered by the server: 1 core, 1 GiB, 10 GiB
    shot(page, "1-default")

    page.fill("#id_cores", "4")  # 20.00 + 2.50 + 1.00 = 23.50, VAT 1.90
    expect(total).to_have_text("CHF 25.40")
    page.fill("#id_memory", "2GiB")  # 20.00 + 5.00 + 1.00 = 26.00, VAT 2.11
    expect(total).to_have_text("CHF 28.11")
    expect(page.locator("#price-units")).to_contain_text("CHF 5.00 per core")
    expect(page.locator("#price-ipv4")).to_contain_text("CHF 2.16 per month")
    shot(page, "2-four-cores")

    page.fill("#id_disk", "a lot")
    expect(page.locator("#price-error")).to_contain_text("Disk: 'a lot' is not a size")
    expect(total).to_have_text("–")
    shot(page, "3-bad-disk")
    page.fill("#id_disk", "100G")  # 20.00 + 5.00 + 10.00 = 35.00, VAT 2.84
    expect(total).to_have_text("CHF 37.84")
    expect(page.locator("#price-error")).to_be_hidden()
