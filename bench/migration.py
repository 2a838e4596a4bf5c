#!/usr/bin/env python3
"""Benchmark: live migration and host drain, through the API with a real Celery worker.

    .venv/bin/python bench/migration.py --runs 6 --drain 6      # root: the lab uses namespaces

A three-host lab (tests/lab), PostgreSQL (database `<DATABASE_URL's>_bench`, made afresh) and Redis.
- live: one demo guest (256 MiB, 1 core, 1 GiB local qcow2 disk holding --disk-data-mib of data)
  moves hv1 -> hv2 -> hv1 ...
  `--runs` times while a namespace on hv3's bridge pings it every 20 ms. Per move: QEMU's
  reported downtime, the longest ping gap, QEMU's total time, RAM bytes sent, disk bytes mirrored,
  and the whole operation (API call to the VM running on the destination, source cleaned).
- drain: `--drain` guests (128 MiB) on hv1; staff put hv1 into maintenance; time until hv1 is
  `maintenance` with every guest running elsewhere.
- rbd: `--rbd-runs` moves (hv1 <-> hv2) of a 256 MiB guest whose 1 GiB root disk is an RBD image in
  a Ceph cluster on the lab's underlay (tests/lab/ceph.py): nothing of the disk is copied.
Printed beside QEMU's default downtime target (300 ms) and Proxmox's (100 ms, auto-raised), which
uncloud's UNCLOUD_MIGRATION_DOWNTIME_MS starts from.
"""

import argparse
import contextlib
import sys
import time
import uuid
from pathlib import Path

from controlplane import BenchControlPlane, LabUnavailable, percentile

QEMU_DEFAULT_DOWNTIME_MS = 300
PROXMOX_DOWNTIME_MS = 100
PING_INTERVAL_S = 0.02


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out: {what}")


def monitor(socket_path, command, arguments):
    import json
    import socket

    with socket.socket(socket.AF_UNIX) as connection:
        connection.settimeout(120)
        connection.connect(str(socket_path))
        answers = connection.makefile("rb")
        answers.readline()
        for request in ({"execute": "qmp_capabilities"}, {"execute": command, "arguments": arguments}):
            connection.sendall(json.dumps(request).encode() + b"\n")
            while "event" in (answer := json.loads(answers.readline())):
                pass
        answers.close()
    return answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=6, help="live moves of the 256 MiB guest")
    parser.add_argument("--drain", type=int, default=6, help="guests on the drained host")
    parser.add_argument("--rbd-runs", type=int, default=4, help="live moves of the 256 MiB guest on RBD (0: none)")
    parser.add_argument("--disk-data-mib", type=int, default=256,
                        help="data written into the moving guest's disk (past its boot filesystem) before the moves")
    args = parser.parse_args()

    try:
        with BenchControlPlane("migration", n_hosts=3, database_suffix="bench") as plane:
            settings = {}
            if args.rbd_runs:
                from tests.lab.ceph import POOL, ceph_for_lab

                ceph = contextlib.ExitStack()
                plane.on_exit(ceph.close)
                args.ceph_cluster, conf = ceph.enter_context(ceph_for_lab(plane.lab))
                # The worker and this process (Django settings) both read these.
                settings = {"UNCLOUD_RBD_CEPH_CONF": conf, "UNCLOUD_RBD_POOL": POOL}
            plane.configure(**settings)
            plane.worker(concurrency=4)
            return run(plane.lab, args)
    except LabUnavailable as reason:
        print(f"lab unavailable: {reason}", file=sys.stderr)
        return 2


def run(lab, args) -> int:
    from rest_framework.test import APIClient

    from accounts.actions import do_create_token, do_create_user, do_set_quota
    from accounts.models import Project
    from agents.hosts import agent_for
    from agents.models import Host
    from networks.specs import net_up_spec
    from tests.lab.controlplane import demo_image, public_network, register_lab_hosts
    from vms.models import VM

    hv1, hv2, hv3 = register_lab_hosts(lab, cores=16, memory_mib=16384, cpu_overbooking="4.0")
    network = public_network()
    image = demo_image()
    user = do_create_user(f"bench-{uuid.uuid4().hex[:6]}", None)
    project = Project.objects.get(owner=user)
    do_set_quota(None, project, quota_vms=1000, quota_cores=1000, quota_memory_mib=10**7, quota_disk_mib=10**8)
    staff = do_create_user(f"staff-{uuid.uuid4().hex[:6]}", None, is_staff=True)

    def client(owner):
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {do_create_token(owner, 'bench')[1]}")
        return api

    customer, admin = client(user), client(staff)

    def create_on(host, name, memory):
        # Placement is the scheduler's: the other hosts drain while this VM is placed.
        Host.objects.exclude(pk=host.pk).update(status="draining")
        body = {"name": name, "cores": 1, "memory": memory, "disk": "1G", "image": str(image.uuid),
                "networks": [str(network.uuid)]}
        response = customer.post("/api/v1/vms/", body, format="json")
        assert response.status_code == 201, response.content
        vm = VM.objects.get(uuid=response.json()["uuid"])
        wait_for(lambda: VM.objects.filter(pk=vm.pk, host__isnull=False).exists(), 120, f"{name} placed")
        Host.objects.update(status="enabled")
        return vm

    def running(vm):
        wait_for(lambda: VM.objects.get(pk=vm.pk).status == "running", 300, f"{vm.name} running")
        vm.refresh_from_db()
        serial = Path(vm.host.state_dir) / "vms" / str(vm.uuid) / "serial.log"
        wait_for(lambda: serial.exists() and "UNCLOUD-READY" in serial.read_text(errors="replace"), 300,
                 f"{vm.name} guest ready")
        return vm

    # --- live moves ----------------------------------------------------------------------------
    vm = running(create_on(hv1, "mover", "256M"))
    address = vm.nics.get().ipv6_address
    if args.disk_data_mib:
        # Real data in the overlay for the mirror to carry: qemu-io through the monitor writes it at
        # 512 MiB in, past the guest's boot filesystem (setup, not timed).
        qmp_socket = Path(vm.host.state_dir) / "vms" / str(vm.uuid) / "qmp.sock"
        write = f"qemu-io disk0 \"write -P 0x5a 512M {args.disk_data_mib}M\""
        monitor(qmp_socket, "human-monitor-command", {"command-line": write})
    agent_for(hv3).call("net-up", net_up_spec(network, hv3))
    pinger_ns = lab.add_guest_namespace(lab.hosts[2], f"br{network.vni}",
                                        addresses=[network.prefix.replace("::/64", "::b3/64")])
    wait_for(lambda: pinger_ns.run(["ping", "-c", "1", "-W", "1", address], check=False).returncode == 0, 60,
             "the guest answers pings")
    moves = move_back_and_forth(vm, args.runs, (hv2, hv1), pinger_ns, admin)
    report_moves(moves, f"demo guest 256 MiB / 1 core / 1 GiB local qcow2 disk with {args.disk_data_mib} MiB of data")
    if args.rbd_runs:
        rbd_vm = running(create_rbd_on(hv1, "rbd-mover", project, image, network))
        assert rbd_vm.disks.get().storage == "rbd"
        wait_for(lambda: pinger_ns.run(["ping", "-c", "1", "-W", "1", rbd_vm.nics.get().ipv6_address],
                                       check=False).returncode == 0, 60, "the RBD guest answers pings")
        rbd_moves = move_back_and_forth(rbd_vm, args.rbd_runs, (hv2, hv1), pinger_ns, admin)
        assert not any(move["disk"] for move in rbd_moves)
        report_moves(rbd_moves, "demo guest 256 MiB / 1 core / 1 GiB RBD disk (Ceph on the underlay, shared)")

    # --- drain ---------------------------------------------------------------------------------
    if args.drain:
        drain_host(args, hv1, create_on, running, admin)
    return 0


def create_rbd_on(host, name, project, image, network):
    """A VM whose root disk is in Ceph (set before its create operation is enqueued, on commit)."""
    from django.db import transaction

    from agents.models import Host
    from images.models import Disk
    from vms.actions import do_create_vm
    from vms.models import VM

    Host.objects.exclude(pk=host.pk).update(status="draining")
    with transaction.atomic():
        vm, _ = do_create_vm(project.owner, project, name=name, cores=1, memory_mib=256, disk_mib=1024, image=image,
                             networks=[network])
        Disk.objects.filter(vm=vm).update(storage="rbd")
    wait_for(lambda: VM.objects.filter(pk=vm.pk, host__isnull=False).exists(), 120, f"{name} placed")
    Host.objects.update(status="enabled")
    return vm


def move_back_and_forth(vm, runs, destinations, pinger_ns, admin) -> list[dict]:
    from agents.models import Operation
    from tests.lab.traffic import Pinger

    address = vm.nics.get().ipv6_address
    moves = []
    for index in range(runs):
        destination = destinations[index % 2]
        pinger = Pinger(pinger_ns.netns, address, interval_s=PING_INTERVAL_S)
        time.sleep(0.5)
        started = time.perf_counter()
        response = admin.post(f"/api/v1/vms/{vm.uuid}/migrate/", {"host": destination.name}, format="json")
        assert response.status_code == 202, response.content
        operation = Operation.objects.get(uuid=response.json()["operation"]["uuid"])
        wait_for(lambda operation=operation: Operation.objects.get(pk=operation.pk).state in
                 ("succeeded", "failed"), 600, "the move")
        elapsed = time.perf_counter() - started
        time.sleep(0.5)
        ping = pinger.stop()
        operation.refresh_from_db()
        assert operation.state == "succeeded", operation.error
        figures = operation.result
        moves.append({"downtime": figures["downtime_ms"], "gap": ping["longest_gap_ms"], "lost": ping["lost"],
                      "total": figures["total_time_ms"], "ram": figures["ram_transferred_bytes"],
                      "disk": figures.get("mirror_bytes") or 0, "operation": elapsed * 1000})
        move = moves[-1]
        print(f"move {index + 1} -> {destination.name}: QEMU downtime {move['downtime']} ms, ping gap "
              f"{move['gap']} ms ({move['lost']} lost), QEMU total {move['total']} ms, RAM "
              f"{move['ram'] / 2**20:.1f} MiB, disk {move['disk'] / 2**20:.2f} MiB, operation "
              f"{move['operation']:.0f} ms", file=sys.stderr)
    return moves


def drain_host(args, hv1, create_on, running, admin):
    from agents.models import Operation
    from vms.models import VM

    tenants = [create_on(hv1, f"tenant-{index}", "128M") for index in range(args.drain)]
    for tenant in tenants:
        running(tenant)
    started = time.perf_counter()
    response = admin.post(f"/api/v1/hosts/{hv1.uuid}/maintenance/")
    assert response.status_code == 202, response.content
    drain = Operation.objects.get(uuid=response.json()["uuid"])
    wait_for(lambda: Operation.objects.get(pk=drain.pk).state in ("succeeded", "failed"), 1800, "the drain")
    drain_s = time.perf_counter() - started
    drain.refresh_from_db()
    assert drain.state == "succeeded", drain.error
    left = VM.objects.filter(host=hv1).count()
    elsewhere = VM.objects.filter(pk__in=[t.pk for t in tenants], status="running").exclude(host=hv1).count()

    print(f"drain of {len(tenants)} guests (128 MiB) off hv1: {drain_s:.1f} s to 'maintenance'; left on hv1: {left}, "
          f"running elsewhere: {elsewhere}")


def report_moves(moves, guest):
    def row(label, values, unit="ms"):
        print(f"{label:44} {percentile(values, 0.5):9.0f} {percentile(values, 0.95):9.0f} {unit}")

    print()
    print(f"Live migration through the API, real Celery worker, 3 lab hosts (namespaces), SSH-tunnelled stream on "
          f"the underlay, TCG; {guest}, {len(moves)} moves; "
          f"ping every {PING_INTERVAL_S * 1000:.0f} ms from a third host across the VXLAN")
    print(f"{'':44} {'p50':>9} {'p95':>9}")
    row("downtime, QEMU's figure", [m["downtime"] for m in moves])
    row("downtime, longest ping gap", [m["gap"] for m in moves])
    row("QEMU total time", [m["total"] for m in moves])
    row("operation (API call to source cleaned)", [m["operation"] for m in moves])
    row("RAM sent", [m["ram"] / 2**20 for m in moves], "MiB")
    row("disk mirrored", [m["disk"] / 2**20 for m in moves], "MiB")
    print(f"targets: QEMU's default downtime limit {QEMU_DEFAULT_DOWNTIME_MS} ms; Proxmox {PROXMOX_DOWNTIME_MS} ms "
          f"(auto-raised), uncloud starts at its UNCLOUD_MIGRATION_DOWNTIME_MS and doubles it while not converging")


if __name__ == "__main__":
    sys.exit(main())
