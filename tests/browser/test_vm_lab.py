"""In a real browser: create a VM on a lab hypervisor and watch the list turn it RUNNING.

Needs root (the lab: network namespaces, sshd, qemu under TCG), Redis and PostgreSQL (a real Celery
worker runs the VM workflow), and the demo guest built from Debian packages.
"""

import re

import pytest
from playwright.sync_api import expect

from images.demo import publish_demo_image
from networks.actions import do_create_public_network
from networks.models import PrefixPool
from tests.browser.conftest import log_in
from tests.lab.controlplane import register_lab_hosts
from vms.choices import VMStatus
from vms.models import VM

pytestmark = pytest.mark.lab
RUNNING_TIMEOUT_MS = 300_000  # TCG boot on a 2-core machine shared with other test runs


@pytest.fixture
def lab_worker(lab, celery_processes):
    # The worker process reads these at start: it must reach the lab host and boot without KVM.
    processes = celery_processes(UNCLOUD_SSH_KEY_FILE=lab.hosts[0].client_key_path, UNCLOUD_VM_ACCEL="tcg")
    return processes.worker()


def test_create_vm_on_a_lab_host_and_see_it_running(lab, lab_worker, page, shot, alice, alice_project, settings):
    lab_host = lab.hosts[0]
    settings.UNCLOUD_SSH_KEY_FILE = str(lab_host.client_key_path)  # this process checks the host too
    register_lab_hosts(lab, [lab_host])  # checked: the scheduler places only on hosts it knows
    PrefixPool.objects.create(prefix="2001:db8:600::/56")
    do_create_public_network(None, "public")
    image = publish_demo_image()

    log_in(page, "alice", "alice-password-1")
    page.goto("/vms/new/")
    page.fill("#id_name", "web1")
    page.fill("#id_cores", "1")
    page.fill("#id_memory", "256M")
    page.fill("#id_disk", "1G")
    page.select_option("#id_image", str(image.uuid))
    shot(page, "1-create-form")
    page.click("text=Create VM")
    expect(page).to_have_url(re.compile(r"/vms/[0-9a-f-]{36}/$"))
    vm = VM.objects.get(project=alice_project, name="web1")

    page.goto("/vms/")
    status = page.locator(f'[data-vm-status="{vm.uuid}"]')
    shot(page, "2-list-pending")
    # The list's status is updated in place by the page's polling, without a reload.
    expect(status).to_have_text("Running", timeout=RUNNING_TIMEOUT_MS)
    shot(page, "3-list-running")
    vm.refresh_from_db()
    assert vm.status == VMStatus.RUNNING and vm.host.name == lab_host.name

    page.click("text=web1")
    expect(page.locator(".address").first).to_have_text(vm.nics.first().ipv6_address)
    expect(page.locator("main")).to_contain_text("vm.create")
    shot(page, "4-detail")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("main button.danger:text('Delete')")
    expect(page.locator(".message.success")).to_contain_text("being deleted")
