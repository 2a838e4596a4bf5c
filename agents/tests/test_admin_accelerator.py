"""The admin shows what `auto` starts a host's guests with, and why (the host check's KVM probe)."""

import pytest

from accounts.tests.test_admin import staff_client  # noqa: F401  (the fixture)
from agents.choices import HostTransport
from agents.models import Host


@pytest.mark.django_db
def test_host_page_shows_the_accelerator_and_the_reason(staff_client):  # noqa: F811
    host = Host.objects.create(name="hv1", transport=HostTransport.LOCAL, state_dir="/var/lib/uncloud",
                               underlay_device="lo",
                               facts={"kvm_usable": False,
                                      "kvm_reason": "a kvm test guest died: qemu-system-x86_64: error: failed to set MSR 0x10a"})
    listing = staff_client.get("/admin/agents/host/").content.decode()
    assert "TCG, no KVM (a kvm test guest died: qemu-system-x86_64: error: failed to set MSR 0x10a)" in listing
    Host.objects.filter(pk=host.pk).update(facts={"kvm_usable": True, "kvm_reason": "a kvm test guest ran for 0.5 s"})
    page = staff_client.get(f"/admin/agents/host/{host.pk}/change/").content.decode()
    assert "KVM (a kvm test guest ran for 0.5 s)" in page
