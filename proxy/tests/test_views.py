"""The VM's domain-name page with alice (owner), bob (member) and charlie (stranger: 404 everywhere)."""

import pytest

from proxy.models import DomainName
from proxy.tests.test_api import make_vm

XSS = "<script>alert(1)</script>"


@pytest.fixture
def vm(alice, alice_project):
    return make_vm(alice, alice_project, "web1")


def test_owner_and_member_manage_names_stranger_gets_404(client, vm, alice, bob, charlie):
    page, add = f"/vms/{vm.uuid}/domains/", f"/vms/{vm.uuid}/domains/add/"
    client.force_login(charlie)
    assert client.get(page).status_code == 404
    assert client.post(add, {"name": "www.example.org"}).status_code == 404
    assert not DomainName.objects.exists()

    client.force_login(bob)
    response = client.post(add, {"name": "WWW.example.org", "proxy_protocol": "on"}, follow=True)
    assert response.status_code == 200 and b"www.example.org is claimed" in response.content
    domain = DomainName.objects.get()
    assert (domain.name, domain.proxy_protocol, domain.vm) == ("www.example.org", True, vm)
    assert domain.proof_token.encode() in response.content  # the page shows what the VM must answer
    again = client.post(add, {"name": "www.example.org"}, follow=True)
    assert b"This name is taken." in again.content and DomainName.objects.count() == 1
    bad = client.post(add, {"name": XSS}, follow=True)
    assert bad.status_code == 200 and XSS.encode() not in bad.content and DomainName.objects.count() == 1

    client.force_login(charlie)
    for what in ("verify", "delete"):
        assert client.post(f"/vms/{vm.uuid}/domains/{domain.uuid}/{what}/").status_code == 404
    client.force_login(alice)
    assert client.get(f"/vms/{vm.uuid}/").content.count(page.encode()) == 1  # linked from the VM's page
    verify = client.post(f"/vms/{vm.uuid}/domains/{domain.uuid}/verify/", follow=True)
    assert b"under way" in verify.content  # its first proof is still queued (no worker here)
    deleted = client.post(f"/vms/{vm.uuid}/domains/{domain.uuid}/delete/", follow=True)
    assert b"no longer served" in deleted.content and not DomainName.objects.exists()
