"""Live migration of a VM whose disk is in Ceph, on real lab hosts, through the API, with a worker.

A real Ceph cluster sits on the lab's underlay (tests/lab/ceph.py); the VM's root disk is an RBD
image every host reaches. It runs on hv1, pinged every 100 ms from a namespace on hv3's bridge
across the VXLAN, with a TCP connection open to its echo service; staff move it to hv2. Nothing
of the disk is copied (no mirror, no NBD export): the destination opens the same image. The guest
keeps its boot and its connection, and the image has one client again afterwards (the source let go).
"""

import json
import time

import pytest
from django.db import transaction

from agents.hosts import agent_for
from images.choices import StorageBackend
from images.models import Disk
from networks.specs import net_up_spec
from networks.tests.test_networks_lab import guest_line, user_data, wait_for_firewall
from tests.lab.ceph import POOL, ceph_for_lab
from tests.lab.ceph import unavailable_reason as ceph_unavailable
from tests.lab.controlplane import (
    apply_lab_settings,
    demo_image,
    lab_settings,
    operations_of,
    public_network,
    qemu_pids,
    register_lab_hosts,
    wait_for_operation,
    wait_for_status,
)
from tests.lab.traffic import PING_INTERVAL_S, Pinger
from tests.lab.waiting import wait_for
from vms.actions import do_create_vm
from vms.models import VM
from vms.tests.test_migration_lab import ECHO_PORT, EchoClient, migrate, nothing_of_vm_on, qemu_on, rx_bytes

pytestmark = [pytest.mark.lab, pytest.mark.worker]


def rbd_watchers(cluster, image_name: str) -> int:
    status = json.loads(cluster.rbd("status", "--format", "json", f"{POOL}/{image_name}", timeout=30) or "{}")
    return len(status.get("watchers", []))


def test_a_running_rbd_vm_moves_live_with_nothing_copied(
        lab_factory, celery_processes, settings, api, staff, client_for, alice, alice_project):
    reason = ceph_unavailable()
    if reason:
        pytest.fail(f"Ceph is needed for this test: {reason}")
    lab = lab_factory(n_hosts=3)
    with ceph_for_lab(lab) as (cluster, conf):
        values = lab_settings(lab, UNCLOUD_RBD_CEPH_CONF=str(conf), UNCLOUD_RBD_POOL=POOL)
        apply_lab_settings(settings, values)
        hv1, hv2, hv3 = register_lab_hosts(lab)
        network = public_network()
        image = demo_image()
        processes = celery_processes(**values)
        processes.worker(concurrency=2)
        admin = client_for(staff)

        # On hv1 (the scheduler's choice while the others drain), its root disk in Ceph: the storage
        # is set before the create operation is enqueued (on commit).
        type(hv1).objects.exclude(pk=hv1.pk).update(status="draining")
        with transaction.atomic():
            vm, _ = do_create_vm(alice, alice_project, name="rbd-mover", cores=1, memory_mib=128, disk_mib=1024,
                                 image=image, networks=[network], user_data=user_data(f"uc.echo={ECHO_PORT}"))
            Disk.objects.filter(vm=vm).update(storage=StorageBackend.RBD)
        wait_for(lambda: VM.objects.filter(pk=vm.pk, host__isnull=False).exists(), timeout=60,
                 message=lambda: f"not placed: {operations_of(vm)}")
        type(hv1).objects.update(status="enabled")
        wait_for_status(vm, "running", processes, timeout=240)
        assert vm.host == hv1
        root = vm.disks.get()
        rbd_image = root.location.rsplit("/", 1)[-1]
        assert rbd_image in cluster.rbd_images(), (root.location, cluster.rbd_images())
        assert guest_line(vm, "UNCLOUD-ECHO-LISTEN", timeout=180) == f"UNCLOUD-ECHO-LISTEN {ECHO_PORT}"
        assert api["alice"].put(f"/api/v1/vms/{vm.uuid}/firewall/",
                                {"rules": [{"protocol": "tcp", "port_min": ECHO_PORT}]},
                                format="json").status_code == 202
        wait_for_firewall(vm, processes, 1)
        address = vm.nics.get().ipv6_address

        agent_for(hv3).call("net-up", net_up_spec(network, hv3))
        pinger_ns = lab.add_guest_namespace(lab.hosts[2], f"br{network.vni}",
                                            addresses=[network.prefix.replace("::/64", "::c3/64")])
        wait_for(lambda: pinger_ns.run(["ping", "-c", "1", "-W", "1", address], check=False).returncode == 0,
                 timeout=60, message=f"{address} does not answer from hv3")
        client = EchoClient(pinger_ns.netns, address)
        try:
            assert client.greeting.startswith("UNCLOUD-ECHO "), client.greeting
            _, boot_id, uptime_before = client.greeting.split()
            assert client.ask("mark on-ceph") == "MARKED"
            assert rbd_watchers(cluster, rbd_image) == 1

            pinger = Pinger(pinger_ns.netns, address)
            time.sleep(1)
            received_before = rx_bytes(lab.hosts[1])
            moving = migrate(admin, vm, host="hv2")
            assert wait_for_operation(moving, processes, timeout=300).state == "succeeded", operations_of(vm)
            time.sleep(1)
            ping = pinger.stop()
            received = rx_bytes(lab.hosts[1]) - received_before

            vm.refresh_from_db()
            assert (vm.host, vm.status) == (hv2, "running"), vm.status_message
            assert agent_for(hv2).call("vm-status", {"uuid": str(vm.uuid)})["status"] == "running"
            assert len(qemu_on(vm, lab.hosts[1])) == 1 and len(qemu_pids(vm)) == 1
            nothing_of_vm_on(vm, lab.hosts[0], hv1)
            # Nothing of the disk travelled: no drive mirrored, and the image is the one it was.
            assert moving.result["mirrored_drives"] == []
            assert not moving.result.get("mirror_bytes")
            root.refresh_from_db()
            assert (root.storage, root.location.rsplit("/", 1)[-1]) == (StorageBackend.RBD, rbd_image)
            assert rbd_image in cluster.rbd_images()
            wait_for(lambda: rbd_watchers(cluster, rbd_image) == 1, timeout=30,
                     message="the source still holds the image open")

            # The same connection, the same boot, the marker written before the move.
            assert client.ask("after-the-move") == "after-the-move"
            assert client.ask("read") == "MARK on-ceph"
            answer = client.ask("uptime").split()
            assert answer[:2] == ["UPTIME", boot_id]
            assert float(answer[2]) > float(uptime_before)
            figures = moving.result
            assert figures["downtime_ms"] >= 0 and figures["ram_transferred_bytes"] > 0
            assert ping["answered"] > 0
            # The disk is 1 GiB: what hv2 received is the guest's memory, not its disk.
            assert received < root.size_mib * 2**20, received
            print(f"\nRBD live migration hv1 -> hv2: QEMU downtime {figures['downtime_ms']} ms, total "
                  f"{figures['total_time_ms']} ms, RAM sent {figures['ram_transferred_bytes']} B, disk mirrored "
                  f"{figures.get('mirror_bytes') or 0} B, hv2 underlay received {received} B; ping every "
                  f"{PING_INTERVAL_S * 1000:.0f} ms: {ping['sent']} sent, {ping['lost']} lost, longest gap "
                  f"{ping['longest_gap_ms']} ms; operation {figures.get('elapsed_ms')} ms")
        finally:
            client.close()
        assert api["alice"].delete(f"/api/v1/vms/{vm.uuid}/").status_code in (202, 204)
        wait_for_status(vm, "deleted", processes, timeout=120)
        assert rbd_image not in cluster.rbd_images()
