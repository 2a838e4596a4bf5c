#!/usr/bin/env python3
"""Benchmark: placement under contention. 500 VM creates at once at 50 hosts whose room adds up to
exactly 500 VMs, with 1, 2 and 4 worker processes; then a small run on real lab hosts.

    .venv/bin/python bench/placement.py                          # 500 VMs, 50 hosts, 1/2/4 workers
    .venv/bin/python bench/placement.py --workers 1 --vms 100 --hosts 10 --lab-vms 0
    .venv/bin/python bench/placement.py --lab-vms 8              # plus 8 creates on 2 real lab hosts (root)

The 50 hosts are recording hosts: the real host program, shipped and started by the real local
transport, in its recording mode (agents/hostside/uncloud_hostside/recording.py): it answers each
verb and logs it instead of running qemu, because 50 hypervisors booting guests do not fit on the
2 cores this runs on. Everything of the control plane runs: the API (Django test client, in this
process), the on-commit enqueue, Redis, real Celery workers (`--concurrency=1` each, as
`docker compose up --scale worker=N` would run them), the Operation engine, the scheduler's row
locks, the serve loop and batch of the host program.

Per worker count: the 500 POSTs go in while no worker runs (their messages wait in Redis), then the
workers start and the clock runs from a worker's first claim of a create (its operation's `started`)
to the last VM placed, and to the last VM running. A VM is placed when it has a host or a claim on
one: the scheduler places every create waiting for placement in one decision and the others' own
place steps take their claims (vms/scheduler.py), so placements/s and creates running/s differ and
are printed apart. Printed: POSTs/s, placements/s (goal >= 100/s), creates finished (running) per
second, and the checks: overcommitted hosts (cores or memory past capacity; goal 0), VMs placed on
more than one host (by the rows and by the verbs the hosts recorded: vm-up of one VM on two hosts),
VMs not running. Set-up and clean-up are not timed.

Before that, `--sequential` creates one after another on 2 recording hosts: the control plane's
own share of create-to-running with no host work in it. Each part's hosts are drained when it ends,
so the next part places on its own hosts only. (One slow host among others: bench/host_affinity.py.)

`--profile N` instead runs N creates and deletes inside this process (Celery eager) on recording
hosts: the control plane's own cost per request, its SQL statements and a cProfile.
"""

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from controlplane import BenchControlPlane, LabUnavailable, api_client, bench_customer, percentile, run_in_threads

GOAL_PLACEMENTS_PER_S = 100
VM_MEMORY_MIB = 512
POST_THREADS = 8


def recording_hosts(count: int, vms_per_host: int, root: Path, prefix: str = "rec"):
    """Host rows for recording hosts (local transport, a state dir with the marker), checked with a
    real host-info call, like staff adding hosts."""
    from django.utils import timezone

    from agents.hosts import agent_for
    from agents.hostside.uncloud_hostside.paths import recording_paths
    from agents.models import Host

    hosts = []
    for index in range(count):
        state_dir = root / f"hv{index:02}"
        state_dir.mkdir(parents=True)
        Path(recording_paths(str(state_dir))["marker"]).write_text("a benchmark's recording host: verbs are logged, not run\n")
        host = Host.objects.create(name=f"{prefix}{index:02}", transport="local", state_dir=str(state_dir),
                                   cores=vms_per_host, memory_mib=vms_per_host * VM_MEMORY_MIB, disk_gib=10_000,
                                   cpu_overbooking=1, memory_overbooking=1)
        facts = agent_for(host).call("host-info")
        assert facts.get("recording"), facts
        Host.objects.filter(pk=host.pk).update(facts=facts, last_heartbeat=timezone.now())
        hosts.append(host)
    return hosts


def fire_creates(api_for, count: int, prefix: str) -> float:
    """`count` creates from POST_THREADS threads at once; the seconds they took."""

    def post(api, index):
        body = {"name": f"{prefix}-{index:04}", "cores": 1, "memory": f"{VM_MEMORY_MIB}M", "disk": "1G", "image": None}
        response = api.post("/api/v1/vms/", body, format="json")
        assert response.status_code == 201, response.content[:300]

    return run_in_threads(count, POST_THREADS, api_for, post)


def follow(project, count: int, timeout: float):
    """Poll until every VM of the project runs (or failed): (when the last got its placement, when
    the last ran), wall clock. A VM is placed once it has a host or a claim on one (its create's
    operation names the host while it still waits at its place step: vms/scheduler.py)."""
    from django.db import connection

    last_placed = last_running = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FILTER (WHERE vm.host_id IS NOT NULL OR EXISTS ("
                           "  SELECT 1 FROM agents_operation op WHERE op.target_uuid = vm.uuid AND op.step = 'place'"
                           "  AND op.host_id IS NOT NULL AND op.state IN ('pending', 'running', 'waiting'))), "
                           "count(*) FILTER (WHERE status = 'running'), "
                           "count(*) FILTER (WHERE status IN ('error', 'waiting_for_capacity')) "
                           "FROM vms_vm vm WHERE project_id = %s", [project.pk])
            placed, running, stuck = cursor.fetchone()
        now = time.time()
        if placed == count and last_placed is None:
            last_placed = now
        if running + stuck == count:
            last_running = now
            break
        time.sleep(0.02)
    return last_placed, last_running


def first_claimed(project) -> float | None:
    """When a worker first took one of the project's creates (wall clock): the placements' clock starts
    there, so a worker's start-up is not counted and the first placement's own work is."""
    from django.db.models import Min

    from agents.models import Operation

    started = Operation.objects.filter(project=project, kind="vm.create").aggregate(first=Min("started"))["first"]
    return started.timestamp() if started else None


def per_second(count: int, start: float | None, end: float | None) -> float:
    return count / (end - start) if start and end and end > start else float("nan")


def check(project, hosts):
    """(overcommitted hosts, VMs on two hosts by the recorded verbs, VMs not running, vm-up calls)."""
    from django.db.models import Count, Sum

    from agents.hostside.uncloud_hostside.recording import recorded
    from vms.models import VM

    vms = VM.objects.filter(project=project)
    used = {row["host"]: row for row in vms.exclude(host=None).values("host").annotate(
        cores=Sum("cores"), memory=Sum("memory_mib"), n=Count("id"))}
    overcommitted = [host.name for host in hosts if host.pk in used and (
        used[host.pk]["cores"] > host.cores * host.cpu_overbooking
        or used[host.pk]["memory"] > host.memory_mib * host.memory_overbooking)]
    booted_on = defaultdict(set)
    vm_ups = 0
    for host in hosts:
        for entry in recorded(host.state_dir):
            if entry["verb"] == "vm-up":
                booted_on[entry["spec"]["uuid"]].add(host.name)
                vm_ups += 1
    rows = {str(vm_uuid): name for vm_uuid, name in vms.values_list("uuid", "host__name")}
    twice = [vm_uuid for vm_uuid, names in booted_on.items() if len(names) > 1]
    wrong_host = [vm_uuid for vm_uuid, names in booted_on.items() if rows.get(vm_uuid) not in names]
    not_running = Counter(vms.exclude(status="running").values_list("status", flat=True))
    return overcommitted, twice + wrong_host, not_running, vm_ups


def forget_run(project, hosts):
    """Clean-up between runs (not a customer's delete: the rows go the way a finished delete leaves
    them, and the hosts forget what they recorded), so the next run finds the same empty room."""
    from agents.hostside.uncloud_hostside.paths import recording_paths
    from vms.models import VM
    from vms.workflows import forget_vm_rows

    for vm in VM.objects.filter(project=project):
        forget_vm_rows(vm)
    for host in hosts:
        Path(recording_paths(host.state_dir)["log"]).unlink(missing_ok=True)


def recording_runs(plane, args) -> list[dict]:
    hosts = recording_hosts(args.hosts, args.vms // args.hosts, plane.workdir / "hosts")
    from tests.lab.controlplane import public_network

    public_network()
    results = []
    for workers in [int(value) for value in args.workers.split(",")]:
        user, project = bench_customer(f"w{workers}")
        post_s = fire_creates(lambda user=user: api_client(user), args.vms, f"w{workers}")
        started = time.time()
        processes = [plane.worker(1, "-n", f"bench{index}-{plane.queue}@%h") for index in range(workers)]
        last_placed, done = follow(project, args.vms, timeout=args.timeout)
        for process in processes:
            plane.stop(process)
        first = first_claimed(project)
        overcommitted, twice, not_running, vm_ups = check(project, hosts)
        row = {"workers": workers, "posts_per_s": args.vms / post_s,
               "placements_per_s": per_second(args.vms, first, last_placed),
               "running_per_s": per_second(args.vms, first, done),
               "first_claimed_s": (first - started) if first else float("nan"),
               "overcommitted": len(overcommitted), "twice": len(twice), "not_running": dict(not_running),
               "vm_ups": vm_ups}
        results.append(row)
        print(json.dumps(row), file=sys.stderr)
        forget_run(project, hosts)
    drain(hosts)
    return results


def drain(hosts):
    """A part's hosts get nothing new once it ends (staff's drain, as for maintenance)."""
    from agents.actions import do_mark_host_draining
    from agents.models import Host

    for host in Host.objects.filter(pk__in=[host.pk for host in hosts]):
        do_mark_host_draining(None, host)


def sequential_run(plane, args) -> dict:
    """The control plane's own share of create-to-running, with nothing of a host's work in it: creates
    one after another through the API on recording hosts (no qemu, no disk, no config drive), a real
    worker (--concurrency=4, as vm_lifecycle.py), each timed from the POST until the VM is running."""
    import statistics

    from vm_lifecycle import operation_phases, wait_status

    hosts = recording_hosts(2, 50, plane.workdir / "sequential-hosts", prefix="seq")
    user, _ = bench_customer("seq")
    api = api_client(user)
    worker = plane.worker(4)
    body = {"cores": 1, "memory": f"{VM_MEMORY_MIB}M", "disk": "1G", "image": None}
    totals, phases = [], []
    for index in range(args.sequential + 2):
        started = time.perf_counter()
        response = api.post("/api/v1/vms/", {**body, "name": f"seq-{index}"}, format="json")
        posted = time.perf_counter()
        assert response.status_code == 201, response.content
        wait_status(response.json()["uuid"], "running")
        if index >= 2:  # the first two (one per host): the worker's imports, the first serve processes
            totals.append(time.perf_counter() - started)
            phases.append(operation_phases(response.json()["uuid"], "vm.create", posted - started))
    plane.stop(worker)
    drain(hosts)
    return {"p50": statistics.median(totals), "p95": percentile(totals, 0.95),
            "phases": {name: statistics.median(row[name] for row in phases) for name in phases[0]
                       if name != "finished at"}}


def lab_run(plane, args):
    """The same creates, fewer, on real lab hosts (qemu under TCG): placed once each, one qemu each."""
    from tests.lab.controlplane import public_network, qemu_pids, register_lab_hosts
    from vms.models import VM

    hosts = register_lab_hosts(plane.lab, cores=args.lab_vms // 2, memory_mib=args.lab_vms // 2 * 128,
                               cpu_overbooking="1.0")
    public_network()
    user, project = bench_customer("lab")

    def create_all():
        from django.db import connections

        api = api_client(user)
        body = {"cores": 1, "memory": "128M", "disk": "1G", "image": None}
        for index in range(args.lab_vms):
            assert api.post("/api/v1/vms/", {**body, "name": f"lab-{index}"}, format="json").status_code == 201
        connections.close_all()

    create_all()
    started = time.time()
    worker = plane.worker(4)
    last, done = follow(project, args.lab_vms, timeout=args.timeout)
    first = first_claimed(project)
    overcommitted, _, not_running, _ = check(project, hosts)
    vms = list(VM.objects.filter(project=project))
    qemus = Counter(len(qemu_pids(vm)) for vm in vms)
    api = api_client(user)
    for vm in vms:
        api.delete(f"/api/v1/vms/{vm.uuid}/")
    deadline = time.monotonic() + args.timeout
    while VM.objects.filter(project=project).exclude(status="deleted").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    plane.stop(worker)
    return {"vms": args.lab_vms, "hosts": len(hosts), "first_claimed_s": (first - started) if first else None,
            "placements_per_s": per_second(args.lab_vms, first, last),
            "all_running_s": (done - started) if done else None, "overcommitted": len(overcommitted),
            "qemus_per_vm": dict(qemus), "not_running": dict(not_running),
            "left_undeleted": VM.objects.filter(project=project).exclude(status="deleted").count()}


def profile_creates(plane, args):
    """--profile N: N creates and deletes with the workflow run inside the request (Celery eager) on
    recording hosts, so what is timed is the control plane alone: queries per request, and where
    the time goes (cProfile, by own time)."""
    import cProfile
    import pstats

    from django.db import connection

    from uncloud_project.celery import app

    recording_hosts(args.hosts, args.vms // args.hosts, plane.workdir / "profiled-hosts")
    from tests.lab.controlplane import public_network

    public_network()
    user, _ = bench_customer("profile")
    api = api_client(user)
    app.conf.task_always_eager = True
    queries, profiler, timings = Counter(), cProfile.Profile(), defaultdict(list)

    def count(execute, sql, params, many, context):
        queries[sql.split()[0]] += 1
        return execute(sql, params, many, context)

    body = {"cores": 1, "memory": f"{VM_MEMORY_MIB}M", "disk": "1G", "image": None}
    api.post("/api/v1/vms/", {**body, "name": "warm"}, format="json")  # imports, first serve processes
    with connection.execute_wrapper(count):
        for index in range(args.profile):
            started = time.perf_counter()
            response = profiler.runcall(api.post, "/api/v1/vms/", {**body, "name": f"p{index}"}, format="json")
            timings["create (POST, every step inline)"].append(time.perf_counter() - started)
            assert response.status_code == 201, response.content
            started = time.perf_counter()
            assert profiler.runcall(api.delete, f"/api/v1/vms/{response.json()['uuid']}/").status_code == 202
            timings["delete (DELETE, every step inline)"].append(time.perf_counter() - started)
    app.conf.task_always_eager = False
    print(f"\nprofile: {args.profile} creates and deletes, Celery eager, recording hosts (no qemu)")
    for name, values in timings.items():
        print(f"  {name:40} median {sorted(values)[len(values) // 2] * 1000:6.1f} ms")
    print(f"  SQL statements per create+delete: {sum(queries.values()) / args.profile:.0f} "
          f"({', '.join(f'{verb} {n / args.profile:.0f}' for verb, n in queries.most_common())})")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=500)
    parser.add_argument("--hosts", type=int, default=50, help="recording hosts; their room is exactly --vms VMs")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts to run with, comma-separated")
    parser.add_argument("--lab-vms", type=int, default=8, help="then this many creates on 2 real lab hosts (0: none)")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--sequential", type=int, default=20,
                        help="creates one after another on recording hosts: the control plane's own share (0: none)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="only profile N creates and deletes in this process (Celery eager), then stop")
    args = parser.parse_args()
    assert args.vms % args.hosts == 0, "--vms must fill --hosts evenly"

    try:
        with BenchControlPlane("placement", n_hosts=2 if args.lab_vms else 0) as plane:
            # Beat and the watcher stay off: no heartbeats to recording hosts, no reconcile between runs.
            plane.configure(UNCLOUD_HOST_HEARTBEAT_TIMEOUT=24 * 3600)
            if args.profile:
                profile_creates(plane, args)
                return 0
            sequential = sequential_run(plane, args) if args.sequential else None
            results = recording_runs(plane, args) if args.vms else []
            lab = lab_run(plane, args) if args.lab_vms else None
    except LabUnavailable as reason:
        print(f"lab unavailable: {reason}", file=sys.stderr)
        return 2

    print(f"\nPlacement under contention: {args.vms} creates at once (POSTs from {POST_THREADS} threads, in-process "
          f"API), {args.hosts} recording hosts with room for exactly {args.vms // args.hosts} VMs each "
          f"(1 core, {VM_MEMORY_MIB} MiB), real Celery workers (--concurrency=1 each) on Redis + PostgreSQL, "
          f"2 cores shared, load average {os.getloadavg()[0]:.1f}")
    print("placed/s: VMs given a host or a claim on one per second, from a worker's first claim of a create to the\n"
          "last VM placed; running/s: creates finished (the VM running on its recording host) per second, same start;\n"
          "scaling: of running/s against the first row")
    print(f"{'workers':>7} {'POSTs/s':>8} {'placed/s':>9} {'running/s':>10} {'scaling':>8} {'overcommitted':>14} "
          f"{'on 2 hosts':>11} {'vm-ups':>7} {'not running':>12}")
    base = results[0]["running_per_s"] if results else None
    for row in results:
        print(f"{row['workers']:>7} {row['posts_per_s']:>8.0f} {row['placements_per_s']:>9.0f} "
              f"{row['running_per_s']:>10.1f} {row['running_per_s'] / base:>7.2f}x {row['overcommitted']:>14} "
              f"{row['twice']:>11} {row['vm_ups']:>7} {sum(row['not_running'].values()):>12}")
    if sequential:
        print(f"\nThe control plane's own share of create-to-running ({args.sequential} creates one after another on "
              f"recording hosts, worker --concurrency=4): p50 {sequential['p50'] * 1000:.0f} ms, p95 "
              f"{sequential['p95'] * 1000:.0f} ms (goal <= 50 ms at p50); median "
              + ", ".join(f"{name} {value * 1000:.0f} ms" for name, value in sequential["phases"].items()))
    if results:
        best = max(row["placements_per_s"] for row in results)
        print(f"goal: >= {GOAL_PLACEMENTS_PER_S} placements/s: {'met' if best >= GOAL_PLACEMENTS_PER_S else 'NOT met'} "
              f"(best {best:.0f}/s; creates running: best {max(row['running_per_s'] for row in results):.1f}/s); "
              "0 overcommitted hosts, 0 VMs on two hosts")
    if lab:
        print(f"\n{lab['vms']} creates at once at {lab['hosts']} real lab hosts (qemu, TCG), 4 workers: all running "
              f"{lab['all_running_s']:.1f} s after the worker started; overcommitted hosts {lab['overcommitted']}, "
              f"qemu processes per VM {lab['qemus_per_vm']}, not running {lab['not_running']}, left after the "
              f"deletes {lab['left_undeleted']}")
    failed = any(row["overcommitted"] or row["twice"] or row["not_running"] for row in results)
    failed = failed or bool(lab and (lab["overcommitted"] or lab["qemus_per_vm"] != {1: lab["vms"]}
                                     or lab["not_running"] or lab["left_undeleted"]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
