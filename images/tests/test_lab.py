"""Upload a qcow2 through the API, then boot a VM from it on a real lab hypervisor over SSH with
images.hostwork: the base image is shipped once and verified, the root disk is an overlay, the
guest reads its SSH key from the config drive and its identity from the metadata service."""

import ipaddress
from pathlib import Path

import pytest

from agents.hosts import agent_for
from images import hostwork
from images.choices import DiskRole, ImageStatus
from images.demo_guest import build_demo_guest
from images.models import Image
from images.tests.conftest import run_operations
from networks.models import Network
from tests.lab.controlplane import register_lab_hosts
from tests.lab.waiting import wait_for_line
from vms import actions as vm_actions

pytestmark = pytest.mark.lab

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJs8WqXbJ0zv7xk3ZlQ0o1ZmIRnEvSJ2v0hUyn8b6bZg alice@laptop"
PREFIX = "2001:db8:500:1::/64"
BOOT_TIMEOUT_S = 180


def test_upload_then_boot_on_a_lab_host(lab, api, alice, alice_project, settings, enqueued,
                                        django_capture_on_commit_callbacks):
    lab_host = lab.hosts[0]
    settings.UNCLOUD_SSH_KEY_FILE = str(lab_host.client_key_path)
    guest = build_demo_guest()
    with open(guest.disk_qcow2, "rb") as handle, django_capture_on_commit_callbacks(execute=True):
        response = api["alice"].post("/api/v1/images/", {"name": "demo", "file": handle}, format="multipart")
    assert response.status_code == 202, response.content
    run_operations(enqueued)
    image = Image.objects.get(uuid=response.json()["uuid"])
    assert image.status == ImageStatus.AVAILABLE, image.error

    (host,) = register_lab_hosts(lab, [lab_host])
    network = Network.objects.create(project=alice_project, name="net", vni=4242, prefix=PREFIX)
    ssh_key = vm_actions.do_add_ssh_key(alice, alice_project, "laptop", KEY)
    vm, _ = vm_actions.do_create_vm(alice, alice_project, name="web_1", cores=1, memory_mib=256, disk_mib=512,
                                    image=image, networks=[network], ssh_keys=[ssh_key])
    vm.host = host
    vm.save(update_fields=["host"])
    agent = agent_for(host)
    agent.call("net-up", {"vni": network.vni, "prefix": network.prefix, "underlay_device": host.underlay_device})
    assert hostwork.ensure_metadata_service(agent)["bridges"] == [f"br{network.vni}"]

    disks = hostwork.ensure_vm_disks(agent, vm)
    root = vm.disks.get(role=DiskRole.ROOT)
    assert disks[0] == {"path": f"{host.state_dir}/disks/{root.uuid}.qcow2", "format": "qcow2"}
    assert disks[-1]["readonly"] and disks[-1]["path"].endswith("/cidata.iso")
    assert root.location == disks[0]["path"] and root.host == host
    assert hostwork.ensure_vm_disks(agent, vm) == disks  # idempotent, nothing shipped twice
    base = Path(host.state_dir) / "images" / f"{image.checksum_sha256}.qcow2"
    assert base.read_bytes() == Path(image.location).read_bytes()

    nics = [{"mac": nic.mac, "vni": nic.network.vni, "ipv6": nic.ipv6_address} for nic in vm.nics.all()]
    started = agent.call("vm-up", {"uuid": str(vm.uuid), "name": vm.name.replace("_", "-"), "cores": 1,
                                   "memory_mib": 256, "disks": disks, "nics": nics, "accel": "tcg"})
    serial = started["serial_log"]
    try:
        assert wait_for_line(serial, "UNCLOUD-CIDATA-KEY", BOOT_TIMEOUT_S) == f"UNCLOUD-CIDATA-KEY {KEY}"
        assert wait_for_line(serial, "UNCLOUD-HOSTNAME", 10) == "UNCLOUD-HOSTNAME web-1"
        address = wait_for_line(serial, "UNCLOUD-ADDR eth0", BOOT_TIMEOUT_S).split()[-1]
        assert ipaddress.IPv6Interface(address).ip == ipaddress.IPv6Address(vm.nics.get().ipv6_address)
        assert wait_for_line(serial, "UNCLOUD-METADATA instance-id", 60) == f"UNCLOUD-METADATA instance-id {vm.uuid}"
        assert wait_for_line(serial, "UNCLOUD-METADATA key", 30) == f"UNCLOUD-METADATA key {KEY}"
    finally:
        agent.call("vm-down", {"uuid": str(vm.uuid), "hard": True})
    hostwork.delete_vm_disks(agent, vm)
    hostwork.delete_vm_disks(agent, vm)  # what is gone stays gone, without error
    assert list((Path(host.state_dir) / "disks").iterdir()) == []
    assert not (Path(host.state_dir) / "metadata" / str(vm.uuid)).exists()
    assert base.exists()  # base images stay for the next VM
    agent.call("metadata-down")
    agent.call("net-down", {"vni": network.vni})
