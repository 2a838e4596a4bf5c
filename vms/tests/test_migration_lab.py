"""Live migration on real lab hosts, through the API, with a real Celery worker.

A VM on hv1 (the demo guest, TCG) is pinged every 100 ms from hv2 across the VXLAN and holds a
TCP connection open; staff move it to hv3. First the destination's qemu is killed midway: the VM
runs on at hv1 and hv3 keeps nothing. Then it moves for real: same boot, the TCP connection
survives, a marker written on its local disk before the move is read back after it, QMP on hv3
says running, hv1 has no qemu left, and hv3's underlay received at least what QEMU says it sent.

The pinger and the TCP client are a namespace plugged into the network's bridge on hv2 (not a
second guest): the frames take the same VXLAN path, and the machine's two cores are spared a
second emulated guest.
"""

import subprocess
import time
from pathlib import Path

import pytest

from agents.hosts import agent_for
from agents.models import Operation
from networks.specs import net_up_spec
from networks.tests.test_networks_lab import create_vm, guest_line, user_data, wait_for_firewall
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
from vms.models import VM

pytestmark = [pytest.mark.lab, pytest.mark.worker]

ECHO_PORT = 7

# Runs inside the pinger's namespace: one TCP connection to the guest's echo service, kept open;
# every line on stdin is sent and the guest's answer printed.
ECHO_CLIENT = r"""
import socket, sys
connection = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
answers = connection.makefile("r")
print(answers.readline().strip(), flush=True)
for line in sys.stdin:
    connection.sendall(line.encode())
    print(answers.readline().strip(), flush=True)
"""


class EchoClient:
    def __init__(self, netns: str, address: str):
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", netns, "python3", "-c", ECHO_CLIENT, address, str(ECHO_PORT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.greeting = self.process.stdout.readline().strip()

    def ask(self, line: str) -> str:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def close(self):
        self.process.kill()
        self.process.wait()


def rx_bytes(lab_host) -> int:
    return int(lab_host.run(["cat", f"/sys/class/net/{lab_host.underlay_device}/statistics/rx_bytes"]).stdout)


def qemu_on(vm, lab_host) -> list[int]:
    marker = f"{lab_host.state_dir}/vms/{vm.uuid}/".encode()
    return [pid for pid in qemu_pids(vm) if marker in Path(f"/proc/{pid}/cmdline").read_bytes()]


def nothing_of_vm_on(vm, lab_host, host_row) -> None:
    assert qemu_on(vm, lab_host) == []
    assert not (Path(lab_host.state_dir) / "vms" / str(vm.uuid)).exists()
    for disk in vm.disks.all():
        assert not (Path(lab_host.state_dir) / "disks" / f"{disk.uuid}.qcow2").exists()
    inventory = agent_for(host_row).call("inventory")
    assert str(vm.uuid) not in {entry["uuid"] for entry in inventory["vms"]}
    assert not any(str(vm.uuid)[:8] in tap["name"] for tap in inventory["taps"]), inventory["taps"]


def migrate(client, vm, **body) -> Operation:
    response = client.post(f"/api/v1/vms/{vm.uuid}/migrate/", body, format="json")
    assert response.status_code == 202, response.content
    return Operation.objects.get(uuid=response.json()["operation"]["uuid"])


def test_live_migration_keeps_the_guest_and_a_failed_one_leaves_it_at_home(
        lab_factory, celery_processes, settings, api, staff, client_for, alice_project):
    lab = lab_factory(n_hosts=3)
    values = lab_settings(lab)
    apply_lab_settings(settings, values)
    hv1, hv2, hv3 = register_lab_hosts(lab)
    network = public_network()
    image = demo_image()
    processes = celery_processes(**values)
    processes.worker(concurrency=2)
    alice, admin = api["alice"], client_for(staff)

    vm = create_vm(alice, image, "mover", project=alice_project, networks=[network], host=hv1,
                   user_data=user_data(f"uc.echo={ECHO_PORT}"))
    wait_for_status(vm, "running", processes, timeout=180)
    assert guest_line(vm, "UNCLOUD-ECHO-LISTEN", timeout=180) == f"UNCLOUD-ECHO-LISTEN {ECHO_PORT}"
    assert alice.put(f"/api/v1/vms/{vm.uuid}/firewall/", {"rules": [{"protocol": "tcp", "port_min": ECHO_PORT}]},
                     format="json").status_code == 202
    wait_for_firewall(vm, processes, 1)
    address = vm.nics.get().ipv6_address

    # Customers cannot move VMs; staff can.
    assert alice.post(f"/api/v1/vms/{vm.uuid}/migrate/", {}, format="json").status_code == 403
    assert api["charlie"].post(f"/api/v1/vms/{vm.uuid}/migrate/", {}, format="json").status_code == 403

    agent_for(hv2).call("net-up", net_up_spec(network, hv2))
    pinger_ns = lab.add_guest_namespace(lab.hosts[1], f"br{network.vni}",
                                        addresses=[network.prefix.replace("::/64", "::c2/64")])
    wait_for(lambda: pinger_ns.run(["ping", "-c", "1", "-W", "1", address], check=False).returncode == 0,
             timeout=60, message=f"{address} does not answer from hv2")
    client = EchoClient(pinger_ns.netns, address)
    try:
        assert client.greeting.startswith("UNCLOUD-ECHO "), client.greeting
        _, boot_id, uptime_before = client.greeting.split()
        assert client.ask("mark moved-with-me") == "MARKED"

        # The destination's qemu dies midway: the VM runs on at hv1, hv3 keeps nothing.
        failing = migrate(admin, vm, host="hv3", bandwidth_mib=1)

        def sending():
            failing.refresh_from_db()
            return failing.step == "transfer" and qemu_on(vm, lab.hosts[2])
        wait_for(sending, timeout=120, log_paths=processes.logs, message=lambda: str(operations_of(vm)))
        time.sleep(2)
        for pid in qemu_on(vm, lab.hosts[2]):
            subprocess.run(["kill", "-9", str(pid)], check=True)
        assert wait_for_operation(failing, processes, timeout=120).state == "failed"
        abort = Operation.objects.get(kind="vm.migrate_abort", target_uuid=vm.uuid)
        assert wait_for_operation(abort, processes, timeout=120).state == "succeeded", operations_of(vm)
        vm.refresh_from_db()
        assert (vm.host, vm.status) == (hv1, "running"), vm.status_message
        assert len(qemu_on(vm, lab.hosts[0])) == 1
        assert agent_for(hv1).call("vm-status", {"uuid": str(vm.uuid)})["status"] == "running"
        nothing_of_vm_on(vm, lab.hosts[2], hv3)
        assert client.ask("still-here") == "still-here"
        print(f"\nfailed migration: {failing.error.splitlines()[0]}; undone: {abort.result.get('outcome')}")

        # Now for real, pinged every 100 ms from hv2.
        pinger = Pinger(pinger_ns.netns, address)
        time.sleep(1)
        received_before = rx_bytes(lab.hosts[2])
        moving = migrate(admin, vm, host="hv3")
        assert wait_for_operation(moving, processes, timeout=300).state == "succeeded", operations_of(vm)
        time.sleep(1)
        ping = pinger.stop()
        received = rx_bytes(lab.hosts[2]) - received_before

        vm.refresh_from_db()
        assert (vm.host, vm.status) == (hv3, "running"), vm.status_message
        assert agent_for(hv3).call("vm-status", {"uuid": str(vm.uuid)})["status"] == "running"
        assert len(qemu_on(vm, lab.hosts[2])) == 1 and len(qemu_pids(vm)) == 1
        nothing_of_vm_on(vm, lab.hosts[0], hv1)
        assert all(disk.host_id == hv3.id for disk in vm.disks.all())

        # The same connection, the same boot, the disk written before the move.
        assert client.ask("after-the-move") == "after-the-move"
        assert client.ask("read") == "MARK moved-with-me"
        answer = client.ask("uptime").split()
        assert answer[:2] == ["UPTIME", boot_id]
        assert float(answer[2]) > float(uptime_before)
        second = EchoClient(pinger_ns.netns, address)
        assert second.greeting.split()[1] == boot_id
        second.close()

        figures = alice.get(f"/api/v1/operations/{moving.uuid}/").json()["figures"]  # the customer sees them too
        assert figures["downtime_ms"] >= 0 and figures["total_time_ms"] > 0
        assert figures["ram_transferred_bytes"] > 0
        assert received >= figures["ram_transferred_bytes"], (received, figures)  # it crossed the underlay
        assert ping["answered"] > 0
        print(f"live migration hv1 -> hv3: QEMU downtime {figures['downtime_ms']} ms, total "
              f"{figures['total_time_ms']} ms, RAM sent {figures['ram_transferred_bytes']} B, disk mirrored "
              f"{figures.get('mirror_bytes')} B, hv3 underlay received {received} B; ping every "
              f"{PING_INTERVAL_S * 1000:.0f} ms: {ping['sent']} sent, {ping['lost']} lost, longest gap "
              f"{ping['longest_gap_ms']} ms; operation {figures.get('elapsed_ms')} ms")
    finally:
        client.close()
    assert VM.objects.get(pk=vm.pk).host == hv3

    # A guest that arrived by migration moves on (its qemu also reports the incoming migration as
    # "completed": that must not pass for a finished outgoing one).
    onward = migrate(admin, vm, host="hv1")
    assert wait_for_operation(onward, processes, timeout=300).state == "succeeded", operations_of(vm)
    vm.refresh_from_db()
    assert (vm.host, vm.status) == (hv1, "running") and len(qemu_on(vm, lab.hosts[0])) == 1
    nothing_of_vm_on(vm, lab.hosts[2], hv3)

    # Cold, as staff may choose for a running VM: stopped, its disk moved, started on hv2.
    cold = migrate(admin, vm, host="hv2", live=False)
    assert cold.kind == "vm.move"
    assert wait_for_operation(cold, processes, timeout=300).state == "succeeded", operations_of(vm)
    vm.refresh_from_db()
    assert (vm.host, vm.status) == (hv2, "running"), vm.status_message
    assert len(qemu_on(vm, lab.hosts[1])) == 1 and len(qemu_pids(vm)) == 1
    nothing_of_vm_on(vm, lab.hosts[0], hv1)
    assert guest_line(vm, "UNCLOUD-ECHO-LISTEN", timeout=180) == f"UNCLOUD-ECHO-LISTEN {ECHO_PORT}"
    wait_for(lambda: pinger_ns.run(["ping", "-c", "1", "-W", "1", address], check=False).returncode == 0,
             timeout=60, message=f"{address} does not answer after the cold move")
    after_cold = EchoClient(pinger_ns.netns, address)
    try:
        assert after_cold.greeting.split()[1] != boot_id  # a new boot: it was stopped and started
        assert after_cold.ask("read") == "MARK moved-with-me"  # the disk came along
    finally:
        after_cold.close()
    print(f"cold move hv1 -> hv2 (stop, move, start): operation "
          f"{(cold.finished - cold.started).total_seconds():.1f} s, disk mirrored {cold.result.get('mirror_bytes')} B")


def test_a_drained_host_ends_empty_in_maintenance_even_when_the_worker_dies_midway(
        lab_factory, celery_processes, settings, api, staff, client_for, alice_project):
    """Three VMs on hv1, one of them stopped; staff put hv1 into maintenance through the API. The
    running ones move live, the stopped one cold (its disk), two at a time at most; the worker is
    killed while they move and another one takes over; hv1 ends empty and in `maintenance`, every
    VM is elsewhere with its address unchanged, the stopped one starts there."""
    lab = lab_factory(n_hosts=3)
    values = lab_settings(lab, UNCLOUD_OPERATION_LEASE_SECONDS=60, UNCLOUD_RESUME_INTERVAL=2,
                          UNCLOUD_RECONCILE_INTERVAL=5, UNCLOUD_MIGRATION_MAX_OUTGOING=2)
    apply_lab_settings(settings, values)
    hv1, hv2, hv3 = register_lab_hosts(lab)
    network = public_network()
    image = demo_image()
    processes = celery_processes(**values)
    first_worker = processes.worker(concurrency=2)
    alice, admin = api["alice"], client_for(staff)

    vms = [create_vm(alice, image, f"tenant-{index}", project=alice_project, networks=[network], host=hv1)
           for index in range(3)]
    for vm in vms:
        wait_for_status(vm, "running", processes, timeout=240)
    addresses = {vm.pk: vm.nics.get().ipv6_address for vm in vms}
    # One of them is stopped: it moves cold (its disk) and stays stopped.
    stopped = vms[2]
    assert alice.post(f"/api/v1/vms/{stopped.uuid}/stop/", {"hard": True}, format="json").status_code == 202
    wait_for_status(stopped, "stopped", processes)
    assert alice.post(f"/api/v1/hosts/{hv1.uuid}/maintenance/").status_code == 403

    response = admin.post(f"/api/v1/hosts/{hv1.uuid}/maintenance/")
    assert response.status_code == 202, response.content
    drain = Operation.objects.get(uuid=response.json()["uuid"])
    assert admin.post(f"/api/v1/hosts/{hv1.uuid}/maintenance/").json()["uuid"] == str(drain.uuid)
    hv1.refresh_from_db()
    assert hv1.status == "draining"

    def moves_under_way():
        return Operation.objects.filter(kind="vm.migrate", state="running").exists()
    wait_for(moves_under_way, timeout=120, log_paths=processes.logs, message="no migration started")
    in_flight = Operation.objects.filter(kind="vm.migrate").exclude(state__in=["succeeded", "failed"])
    assert in_flight.count() <= 2 or in_flight.filter(state="waiting").exists()
    processes.kill(first_worker)
    processes.worker(concurrency=2)
    processes.beat()

    started = time.monotonic()
    assert wait_for_operation(drain, processes, timeout=600).state == "succeeded", (drain.error, drain.result)
    drain_seconds = time.monotonic() - started
    hv1.refresh_from_db()
    assert hv1.status == "maintenance"
    assert not VM.objects.filter(host=hv1).exists()
    for vm in vms:
        vm.refresh_from_db()
        wanted = "stopped" if vm == stopped else "running"
        assert vm.status == wanted and vm.host in (hv2, hv3), (vm.name, vm.status, vm.status_message)
        assert vm.nics.get().ipv6_address == addresses[vm.pk]
        assert agent_for(vm.host).call("vm-status", {"uuid": str(vm.uuid)})["status"] == wanted
        assert len(qemu_pids(vm)) == (0 if vm == stopped else 1)
        assert not (Path(lab.hosts[0].state_dir) / "vms" / str(vm.uuid)).exists()
        for disk in vm.disks.all():
            assert disk.host_id == vm.host_id
            assert (Path(vm.host.state_dir) / "disks" / f"{disk.uuid}.qcow2").exists()
            assert not (Path(lab.hosts[0].state_dir) / "disks" / f"{disk.uuid}.qcow2").exists()
    # The stopped one starts where its disk went.
    assert alice.post(f"/api/v1/vms/{stopped.uuid}/start/").status_code == 202
    wait_for_status(stopped, "running", processes)
    assert agent_for(hv1).call("inventory")["vms"] == []
    print(f"\ndrain of {len(vms)} VMs (worker killed midway): {drain_seconds:.1f} s after the kill; "
          f"result {drain.result.get('moved')} moved")

    # Staff bring it back.
    assert admin.patch(f"/api/v1/hosts/{hv1.uuid}/", {"status": "enabled"}, format="json").status_code == 200
    hv1.refresh_from_db()
    assert hv1.status == "enabled"
