#!/usr/bin/env python3
"""Benchmark: the VM list API at size. One project holding 10,000 VMs (each with a root disk, a NIC
on the public network, an SSH key, a host), listed page by page through the API as a customer's
script would walk it (`next` links), every page timed and its SQL queries counted.

    .venv/bin/python bench/api_at_size.py                    # 10,000 VMs, pages of 100 (the default)
    .venv/bin/python bench/api_at_size.py --vms 2000 --limits 20,100,500

PostgreSQL (database `<DATABASE_URL's>_api`, made afresh), no lab and no worker: the VMs are made
stopped by do_create_vm (no operation to run), then marked running on two host rows in one UPDATE
(set-up, not timed; the first 200 by do_create_vm, the rest copies of their rows made in bulk).
Requests go through Django's test client in this process (the whole view, authentication,
pagination, serializer and JSON; no HTTP server). Beside each page's time the
time its SQL took on the database (the floor any Python on top of it could reach) and the CPU time
this process spent on it (Python's share, less blurred by the machine's load than the wall clock).
The baseline, in the same process: the same walk through VMSerializer over model instances (the
read path before vms/api/listing.py: keys-first pages, select_related and to_attr prefetches).
A page's queries: 2 (the token, the page), 3 when the token's last_used is written (once a minute).
Then the disks and operations lists (as many as VMs), keys-first pages beside DRF's LimitOffset.
Goal (issue #21): p95 per page <= 50 ms, the same number of queries on every page.
"""

import argparse
import os
import statistics
import sys
import time

from controlplane import BenchControlPlane, api_client, bench_customer, percentile

GOAL_P95_MS = 50


THROUGH_ACTIONS = 200  # VMs made by do_create_vm; the rest are copies of their rows, made in bulk


# Any valid public key: the bench only needs one to attach to its VMs.
BENCH_SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1L0f0dB4JqZ1nlMHVzrb6R2q1zwI0iNQ7DP9BYbJt bench@laptop"

def make_vms(count: int, project, user):
    """The first THROUGH_ACTIONS VMs by do_create_vm (stopped: no operation to run); the rest copied
    in bulk from the rows it wrote (set-up only: 10,000 do_create_vm calls take over ten minutes here,
    each summing the project's usage for its quota check). Then all on two hosts, running."""
    from agents.models import Host
    from images.models import Disk
    from networks.addressing import eui64_address
    from networks.models import NIC
    from tests.lab.controlplane import public_network
    from vms.actions import do_add_ssh_key, do_create_vm
    from vms.models import VM

    network = public_network()
    key = do_add_ssh_key(user, project, "laptop", BENCH_SSH_KEY)
    hosts = [Host.objects.create(name=f"hv{index}", transport="local", state_dir=f"/var/lib/uncloud-{index}",
                                 cores=10_000, memory_mib=10**8) for index in range(2)]
    for index in range(min(count, THROUGH_ACTIONS)):
        do_create_vm(user, project, name=f"vm{index:05}", cores=1, memory_mib=512, disk_mib=1024, ssh_keys=[key],
                     start=False)
    model_vm = VM.objects.filter(project=project).first()
    model_disk, model_nic = model_vm.disks.get(), model_vm.nics.get()
    for batch_start in range(THROUGH_ACTIONS, count, 1000):
        indexes = range(batch_start, min(batch_start + 1000, count))
        vms = VM.objects.bulk_create([VM(project=project, name=f"vm{index:05}", cores=1, memory_mib=512,
                                         desired_state=model_vm.desired_state, status=model_vm.status)
                                      for index in indexes])
        Disk.objects.bulk_create([Disk(project=project, name=f"{vm.name}-root", vm=vm, role=model_disk.role,
                                       size_mib=model_disk.size_mib) for vm in vms])
        macs = [f"02:00:b0:{index >> 16 & 0xff:02x}:{index >> 8 & 0xff:02x}:{index & 0xff:02x}" for index in indexes]
        NIC.objects.bulk_create([NIC(vm=vm, network=network, index=0, mac=mac, status=model_nic.status,
                                     ipv6_address=eui64_address(network.prefix, mac)) for vm, mac in zip(vms, macs, strict=True)])
        VM.ssh_keys.through.objects.bulk_create([VM.ssh_keys.through(vm=vm, sshkey=key) for vm in vms])
    from agents.models import Operation

    # A finished create operation for each VM, as the VMs' creates would have left (the operations list).
    for batch_start in range(0, count, 1000):
        Operation.objects.bulk_create([
            Operation(kind="create_vm", project=project, target_kind="vm", target_uuid=uuid, state="succeeded",
                      step="done", steps_done=4, steps_total=4, created_by=user, payload={"vm": str(uuid)})
            for uuid in VM.objects.filter(project=project).order_by("id").values_list("uuid", flat=True)
            [batch_start:batch_start + 1000]])
    ids = list(VM.objects.filter(project=project).values_list("id", flat=True))
    for parity, host in enumerate(hosts):
        VM.objects.filter(id__in=ids[parity::2]).update(host=host, status="running", desired_state="running")
    # Table statistics as autovacuum would have them by now: the planner must not think 10,000 rows are 9.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def walk(api, limit: int, collection: str = "vms"):
    """Every page from the first to the last: (seconds per page, SQL seconds per page, queries per
    page, this process's CPU seconds per page, VMs seen)."""
    from django.db import connection

    pages, sql_times, query_counts, cpu_times, seen = [], [], [], [], 0
    path = f"/api/v1/{collection}/?limit={limit}"
    while path:
        spent = []

        def timed(execute, sql, params, many, context, spent=spent):
            started = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                spent.append(time.perf_counter() - started)

        with connection.execute_wrapper(timed):
            started, cpu_started = time.perf_counter(), time.process_time()
            response = api.get(path)
            body = response.json()
            pages.append(time.perf_counter() - started)
            cpu_times.append(time.process_time() - cpu_started)
        assert response.status_code == 200, body
        sql_times.append(sum(spent))
        query_counts.append(len(spent))
        seen += len(body["results"])
        path = body["next"]
    return pages, sql_times, query_counts, cpu_times, seen


def report(label: str, limit: int, pages, sql_times, counts, cpu_times) -> None:
    print(f"{limit:>9} {len(pages):>6} {statistics.median(pages) * 1000:>8.1f} {percentile(pages, 0.95) * 1000:>8.1f} "
          f"{max(pages) * 1000:>8.1f} {statistics.median(sql_times) * 1000:>8.1f} "
          f"{percentile(sql_times, 0.95) * 1000:>8.1f} {statistics.median(cpu_times) * 1000:>8.1f} "
          f"{'/'.join(map(str, sorted(set(counts)))):>13}  {label}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--limits", default="100", help="page sizes to walk, comma-separated")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baselines (VMSerializer, DRF's plain pagination)")
    parser.add_argument("--profile", action="store_true", help="then one walk of pages of 100 under cProfile "
                        "(environment: SORT=cumulative, TOP=60 for another order and length)")
    args = parser.parse_args()

    with BenchControlPlane("api", n_hosts=0) as plane:
        plane.configure()
        user, project = bench_customer(quota_vms=args.vms, quota_cores=args.vms, quota_memory_mib=512 * args.vms,
                                       quota_disk_mib=1024 * args.vms)
        make_vms(args.vms, project, user)
        api = api_client(user)
        api.get("/api/v1/vms/?limit=1")  # warm: URL resolver, serializer classes, the token's last_used
        print(f"\nVM list API, {args.vms} VMs in one project, PostgreSQL, Django test client in-process "
              f"(no HTTP server), 2 cores shared, load average {os.getloadavg()[0]:.1f}")
        print(f"{'page size':>9} {'pages':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'SQL p50':>8} {'SQL p95':>8}"
              f" {'CPU p50':>8} {'queries/page':>13}")
        worst = 0.0
        from rest_framework import mixins

        from accounts.api.pagination import KeysFirstPagination
        from vms.api.views import VMViewSet

        fast_path = (VMViewSet.list, VMViewSet.pagination_class)
        # The baseline is the read path before vms/api/listing.py: keys-first pages of model instances
        # (the view's select_related and to_attr prefetches) through VMSerializer.
        paths = [("one SQL a page (the view's)", fast_path)]
        if not args.no_baseline:
            paths.append(("VMSerializer (before)", (mixins.ListModelMixin.list, KeysFirstPagination)))
        for limit in [int(value) for value in args.limits.split(",")]:
            for label, (list_method, pagination) in paths:
                VMViewSet.list, VMViewSet.pagination_class = list_method, pagination
                pages, sql_times, counts, cpu_times, seen = walk(api, limit)
                assert seen == args.vms, f"listed {seen} VMs of {args.vms}"
                p95 = percentile(pages, 0.95)
                if limit == 100 and list_method is fast_path[0]:
                    worst = p95
                report(label, limit, pages, sql_times, counts, cpu_times)
        VMViewSet.list, VMViewSet.pagination_class = fast_path
        from rest_framework.pagination import LimitOffsetPagination

        from agents.api.views import OperationViewSet
        from images.api.views import DiskViewSet

        # Disks and operations: as many as VMs (or more). Their pages were DRF's LimitOffsetPagination.
        for collection, viewset in (("disks", DiskViewSet), ("operations", OperationViewSet)):
            keys_first = viewset.pagination_class
            for label, pagination in ((f"{collection}, keys first (the view's)", keys_first),
                                      (f"{collection}, DRF's LimitOffset (before)", LimitOffsetPagination)):
                if args.no_baseline and pagination is LimitOffsetPagination:
                    continue
                viewset.pagination_class = pagination
                pages, sql_times, counts, cpu_times, seen = walk(api, 100, collection)
                assert seen >= args.vms, f"listed {seen} {collection} of {args.vms}"
                report(label, 100, pages, sql_times, counts, cpu_times)
            viewset.pagination_class = keys_first
        if worst:
            print(f"goal: p95 per page of 100 <= {GOAL_P95_MS} ms: {'met' if worst * 1000 <= GOAL_P95_MS else 'NOT met'}")
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.runcall(walk, api, 100)
            stats = pstats.Stats(profiler, stream=sys.stdout)
            stats.sort_stats(os.environ.get("SORT", "tottime")).print_stats(int(os.environ.get("TOP", "25")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
