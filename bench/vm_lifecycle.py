#!/usr/bin/env python3
"""Benchmark: the control plane's own cost. Create-to-running through the API with a real Celery
worker, a boot-and-delete cycle at concurrency 4, and the agent-only vm-up beside them.

    .venv/bin/python bench/vm_lifecycle.py --runs 10 --cycles 12      # root: the lab uses namespaces

Uses PostgreSQL (database `uncloud_bench`, made afresh) and Redis on 127.0.0.1 like the test suite,
a two-host lab (tests/lab) and the demo guest. See bench/README.md for what exactly is timed.
"""

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

from controlplane import BenchControlPlane, LabUnavailable, api_client, bench_customer, percentile, run_in_threads

POLL_S = 0.01
# The sequential runs poll more often: one thread alone, and a 10 ms poll added 5 ms on average to
# what it measured (create-to-running minus vm-up is the control plane's share, a figure of ~50 ms).
SEQUENTIAL_POLL_S = 0.002


def wait_status(vm_uuid, wanted, timeout=120, poll_s=POLL_S):
    from django.db import connection

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Plain SQL: four threads poll every 10 ms, and the ORM's own CPU would slow what is measured.
        with connection.cursor() as cursor:
            cursor.execute("SELECT status, status_message FROM vms_vm WHERE uuid = %s", [vm_uuid])
            status, message = cursor.fetchone()
        if status == wanted:
            return
        if status == "error":
            raise RuntimeError(f"VM {vm_uuid} failed: {message}")
        time.sleep(poll_s)
    raise TimeoutError(f"VM {vm_uuid} not {wanted} after {timeout} s")


def wait_guest_ready(vm, timeout=120):
    serial_log = Path(vm.host.state_dir) / "vms" / str(vm.uuid) / "serial.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if serial_log.exists() and "UNCLOUD-READY" in serial_log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    print(f"warning: the guest of {vm.name} did not say UNCLOUD-READY within {timeout} s", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="sequential create-to-running runs")
    parser.add_argument("--cycles", type=int, default=12, help="boot-and-delete cycles, 4 at a time")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="then N creates and deletes run in this process (Celery eager), every step "
                             "and host verb timed")
    parser.add_argument("--cprofile", metavar="FILE",
                        help="with --profile: the in-process creates under cProfile, stats written to FILE "
                             "(read them with python -m pstats FILE)")
    args = parser.parse_args()

    try:
        with BenchControlPlane("bench", n_hosts=2) as plane:
            plane.configure()
            plane.worker(concurrency=4)
            return run_benchmarks(plane.lab, args)
    except LabUnavailable as reason:
        print(f"lab unavailable: {reason}", file=sys.stderr)
        return 2


def run_benchmarks(lab, args) -> int:
    from agents.hosts import agent_for
    from tests.lab.controlplane import demo_image, public_network, register_lab_hosts
    from vms.models import VM
    from vms.specs import vm_up_spec

    hosts = register_lab_hosts(lab, cores=16, memory_mib=16384, cpu_overbooking="4.0")
    public_network()
    image = demo_image()
    user, _ = bench_customer()

    def client():
        return api_client(user)

    def create(api, name):
        body = {"name": name, "cores": 1, "memory": "128M", "disk": "1G", "image": str(image.uuid)}
        response = api.post("/api/v1/vms/", body, format="json")
        assert response.status_code == 201, response.content
        return response.json()["uuid"]

    def delete(api, vm_uuid):
        assert api.delete(f"/api/v1/vms/{vm_uuid}/").status_code == 202
        wait_status(vm_uuid, "deleted")

    api = client()
    # Warm-up (not counted): base image copied to each host, serve processes started.
    warm = []
    for host_index in range(2):
        vm_uuid = create(api, f"warm-{host_index}")
        wait_status(vm_uuid, "running")
        warm.append(vm_uuid)
    # Their guests boot under TCG for several seconds, taking the CPU the timed runs want: wait.
    for vm_uuid in warm:
        wait_guest_ready(VM.objects.select_related("host").get(uuid=vm_uuid))
    create_to_running, stamped_to_running, agent_only, create_phases, delete_phases = [], [], [], [], []
    for run in range(args.runs):
        started, started_at = time.perf_counter(), time.time()
        vm_uuid = create(api, f"run-{run}")
        posted = time.perf_counter()
        wait_status(vm_uuid, "running", poll_s=SEQUENTIAL_POLL_S)
        create_to_running.append(time.perf_counter() - started)
        create_phases.append(operation_phases(vm_uuid, "vm.create", posted - started))
        # Without any poll: to the moment the worker stamped the operation's end, in the transaction
        # that says "running" (same machine, same clock).
        stamped_to_running.append(create_phases[-1]["finished at"] - started_at)
        del create_phases[-1]["finished at"]
        # The agent alone, same VM, same host: vm-down, then time one vm-up.
        vm = VM.objects.select_related("host").get(uuid=vm_uuid)
        agent = agent_for(vm.host)
        disks = [{"path": disk.location, "format": "qcow2"} for disk in vm.disks.all()]
        agent.call("vm-down", {"uuid": vm_uuid, "hard": True})
        started = time.perf_counter()
        agent.call("vm-up", vm_up_spec(vm, disks))
        agent_only.append(time.perf_counter() - started)
        print(f"run {run + 1:2}: API create-to-running {create_to_running[-1] * 1000:6.0f} ms   "
              f"agent vm-up {agent_only[-1] * 1000:5.0f} ms", file=sys.stderr)
        started = time.perf_counter()
        delete(api, vm_uuid)
        delete_phases.append(operation_phases(vm_uuid, "vm.delete", None, time.perf_counter() - started))

    cycles, cycle_creates, cycle_deletes, lock = [], [], [], threading.Lock()

    def cycle(own, index):
        started = time.perf_counter()
        vm_uuid = create(own, f"cycle-{index}")
        posted = time.perf_counter()
        wait_status(vm_uuid, "running")
        running = time.perf_counter()
        delete(own, vm_uuid)
        finished = time.perf_counter()
        created = {**operation_phases(vm_uuid, "vm.create", posted - started), "to running": running - started}
        deleted = operation_phases(vm_uuid, "vm.delete", None, finished - running)
        with lock:
            cycles.append(finished - started)
            cycle_creates.append(created)
            cycle_deletes.append(deleted)

    wall = run_in_threads(args.cycles, 4, client, cycle)

    def ms(values, fraction):
        return f"{percentile(values, fraction) * 1000:7.0f}"

    print()
    print(f"VM lifecycle through the API, real Celery worker (concurrency 4) on Redis + PostgreSQL, "
          f"{len(hosts)} lab hosts over SSH, TCG, demo guest 128 MiB / 1 core / 1 GiB overlay")
    print(f"{'ms':34} {'p50':>7} {'p95':>7}")
    print(f"{'create-to-running (API)':34} {ms(create_to_running, 0.5)} {ms(create_to_running, 0.95)}"
          f"   (polled every {SEQUENTIAL_POLL_S * 1000:.0f} ms)")
    print(f"{'  to the operation end stamped':34} {ms(stamped_to_running, 0.5)} {ms(stamped_to_running, 0.95)}")
    print(f"{'agent-only vm-up (same VMs)':34} {ms(agent_only, 0.5)} {ms(agent_only, 0.95)}")
    overhead = statistics.median(create_to_running) - statistics.median(agent_only)
    stamped = statistics.median(stamped_to_running) - statistics.median(agent_only)
    print(f"control plane's own share at p50: {overhead * 1000:.0f} ms (goal <= 50 ms: "
          f"{'met' if overhead <= 0.050 else 'NOT met'}; to the stamped end: {stamped * 1000:.0f} ms)")
    print(f"boot-and-delete cycle, concurrency 4, {len(cycles)} cycles: median {statistics.median(cycles) * 1000:.0f} ms,"
          f" p95 {percentile(cycles, 0.95) * 1000:.0f} ms, wall {wall:.1f} s")
    print_phases("create (sequential runs), median ms", create_phases)
    print_phases("delete (sequential runs), median ms", delete_phases)
    print_phases("create (in the cycles), median ms", cycle_creates)
    print_phases("delete (in the cycles), median ms", cycle_deletes)
    print(f"goals: create-to-running p50 <= 1000 ms: "
          f"{'met' if statistics.median(create_to_running) <= 1.0 else 'NOT met'}; "
          f"boot-and-delete median <= 2000 ms: {'met' if statistics.median(cycles) <= 2.0 else 'NOT met'} "
          f"(OpenStack Rally's published median: 5100 ms)")
    if args.profile:
        # While the warm-up VMs still run, as in the runs above: their networks stay up.
        profile_in_process(args.profile, client, create, delete, cprofile_to=args.cprofile)
    for vm_uuid in VM.objects.exclude(status="deleted").values_list("uuid", flat=True):
        delete(api, str(vm_uuid))
    return 0


def operation_phases(vm_uuid, kind, post_s, total_s=None) -> dict:
    """Where one create (or delete) spent its time, from its Operation row's timestamps:
    API (the POST), queue (commit to the worker's first claim), steps (first claim to finished)."""
    from agents.models import Operation

    operations = Operation.objects.filter(target_uuid=vm_uuid, kind=kind).order_by("-created")
    deadline = time.monotonic() + 30
    # A delete's VM says "deleted" after its last step, a moment before the row is finished.
    while (operation := operations.first()).finished is None and time.monotonic() < deadline:
        time.sleep(POLL_S)
    phases = {"steps": (operation.finished - operation.started).total_seconds(),
              "created->claimed": (operation.started - operation.created).total_seconds(),
              "finished at": operation.finished.timestamp()}
    if post_s is not None:
        phases["API POST"] = post_s
    if total_s is not None:
        phases["request->deleted"] = total_s
    return phases


def print_phases(title, phases_list):
    if not phases_list:
        return
    names = [name for name in phases_list[0] if name != "finished at"]
    print(f"{title}: " + ", ".join(
        f"{name} {statistics.median(phases[name] for phases in phases_list) * 1000:.0f}" for name in names))


def profile_in_process(count, client, create, delete, cprofile_to=None):
    """Run creates and deletes with the workflow in this process (Celery eager): no queue, no
    worker, so what is left is the API, the steps' database work and the host calls, each timed."""
    from collections import defaultdict

    from django.db import connection

    from agents import operations
    from agents.hostagent import HostAgent
    from uncloud_project.celery import app

    timings = defaultdict(list)
    real_call = HostAgent.call

    def timed_call(self, verb, spec=None, timeout=None):
        started = time.perf_counter()
        answer = real_call(self, verb, spec, timeout)
        elapsed = time.perf_counter() - started
        if verb != "batch":
            timings[f"  host {verb}"].append(elapsed)
            return answer
        verbs = [call["verb"] for call in spec["calls"]]
        timings[f"  host batch: {'+'.join(verbs)}"].append(elapsed)
        for name, milliseconds in zip(verbs, answer.get("elapsed_ms", []), strict=False):
            timings[f"    on the host: {name}"].append(milliseconds / 1000)
        timings["    on the host: batch's round trip and rest"].append(
            elapsed - sum(answer.get("elapsed_ms", [])) / 1000)
        return answer

    def timed_step(kind, step):
        real_run = step.run

        def run(operation):
            started = time.perf_counter()
            try:
                return real_run(operation)
            finally:
                timings[f"{kind} step {step.name}"].append(time.perf_counter() - started)
        return run

    for kind in ("vm.create", "vm.delete"):
        for step in operations.workflow_for(kind).steps:
            step.run = timed_step(kind, step)
    HostAgent.call = timed_call
    app.conf.task_always_eager = True
    api = client()
    queries = defaultdict(list)

    def counted(name, action):
        calls = []

        def count(execute, sql, params, many, context):
            calls.append(sql)
            return execute(sql, params, many, context)

        started = time.perf_counter()
        with connection.execute_wrapper(count):
            result = action()
        timings[name].append(time.perf_counter() - started)
        queries[name].append(len(calls))
        return result

    profiler = None
    if cprofile_to:
        import cProfile

        profiler = cProfile.Profile()
    try:
        for index in range(count):
            # Eager: the whole workflow runs inside the request.
            name = f"profile-{index}"
            if profiler is not None:
                profiler.enable()
            vm_uuid = counted("create (POST, all steps inline)", lambda name=name: create(api, name))
            if profiler is not None:
                profiler.disable()
            wait_status(vm_uuid, "running")
            counted("delete (DELETE, all steps inline)", lambda vm_uuid=vm_uuid: delete(api, vm_uuid))
    finally:
        if profiler is not None:
            profiler.dump_stats(cprofile_to)
        app.conf.task_always_eager = False
        HostAgent.call = real_call
    print(f"\nprofile: {count} creates and deletes in this process (Celery eager), median / max ms, calls per run")
    for name, values in timings.items():
        print(f"{name:40} {statistics.median(values) * 1000:7.0f} {max(values) * 1000:7.0f}   "
              f"x{len(values) / count:.1f}" + (f"   {statistics.median(queries[name]):.0f} SQL queries"
                                              if name in queries else ""))


if __name__ == "__main__":
    sys.exit(main())
