#!/usr/bin/env python3
"""Benchmark: one slow host must not hold up work for the others (issues 17 and 21, host affinity).

Two lab hosts, a real worker of 3 processes (as bin/run starts) and the host watcher. The "slow"
host's processes (its sshd and all it starts: the host program, qemu-img, its guests) are held to
--cpu-percent of one CPU (a cpu cgroup; the kernel here has no netem to delay its link instead),
and a backlog of creates is placed on it; meanwhile creates that fit only the healthy host are made
one after another and their create-to-running is timed (do_create_vm until the VM row says
running). Three rounds in the same process:

    baseline       no delay, no backlog
    slow, bounded  the slow host with its backlog, UNCLOUD_HOST_WORKER_SLOTS=2 (the default)
    slow, unbound  the same with UNCLOUD_HOST_WORKER_SLOTS=0 (every worker may sit on one host,
                   as before agents/hostslots.py)

    sudo .venv/bin/python bench/host_affinity.py                 # 5 timed creates a round, backlog 6
    sudo .venv/bin/python bench/host_affinity.py --creates 10 --backlog 9 --cpu-percent 2

The machine's other load moves the figures: compare the rounds of one run, not runs.
"""

import argparse
import contextlib
import math
import statistics
import sys
import time
from pathlib import Path

from controlplane import BenchControlPlane, LabUnavailable, bench_customer

ROUNDS = [("baseline", None, "2"), ("slow, bounded", "slow", "2"), ("slow, unbound", "slow", "0")]


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.02)
    raise TimeoutError(what)


CPU_CGROUPS = Path("/sys/fs/cgroup/cpu")


def slow_down(lab_host, percent: int) -> None:
    """Every process of the host's namespace (and so all they start) into a cpu cgroup of its own."""
    from tests.lab.hosts import processes_in_netns

    if not (CPU_CGROUPS / "cgroup.procs").exists():
        raise LabUnavailable("no cgroup v1 cpu controller at /sys/fs/cgroup/cpu to slow a host down")
    group = CPU_CGROUPS / f"uc-bench-slow-{lab_host.netns}"
    group.mkdir(exist_ok=True)
    (group / "cpu.cfs_period_us").write_text("100000")
    (group / "cpu.cfs_quota_us").write_text(str(percent * 1000))
    for pid in processes_in_netns(lab_host.netns):
        with contextlib.suppress(OSError):  # gone meanwhile
            (group / "cgroup.procs").write_text(str(pid))


def speed_up(lab_host) -> None:
    group = CPU_CGROUPS / f"uc-bench-slow-{lab_host.netns}"
    if not group.exists():
        return
    for pid in (group / "cgroup.procs").read_text().split():
        with contextlib.suppress(OSError):
            (CPU_CGROUPS / "cgroup.procs").write_text(pid)
    group.rmdir()


def nearest_rank(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(percent / 100 * len(ordered)) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--creates", type=int, default=5, help="timed creates on the healthy host per round")
    parser.add_argument("--backlog", type=int, default=6, help="creates queued on the slow host per round")
    parser.add_argument("--cpu-percent", type=int, default=5, help="CPU the slow host gets (percent of one)")
    args = parser.parse_args()
    try:
        with BenchControlPlane("host_affinity", n_hosts=2) as plane:
            plane.configure(UNCLOUD_RESUME_INTERVAL=2, UNCLOUD_RECONCILE_INTERVAL=10)
            return run(plane, args)
    except LabUnavailable as reason:
        print(f"lab unavailable: {reason}", file=sys.stderr)
        return 2


def run(plane, args) -> int:
    from agents.actions import do_enable_host, do_mark_host_draining
    from agents.choices import HostLiveness
    from agents.models import Host
    from tests.lab.controlplane import demo_image, public_network, register_lab_hosts
    from vms.actions import do_create_vm, do_delete_vm
    from vms.models import VM

    slow_lab_host = plane.lab.hosts[0]
    slow, healthy = register_lab_hosts(plane.lab, cores=16, memory_mib=16384, cpu_overbooking="4.0")
    public_network()
    image = demo_image()
    user, project = bench_customer("affinity")
    plane.watcher()
    wait(lambda: Host.objects.filter(liveness=HostLiveness.ALIVE).count() == 2, 60, "hosts alive")
    plane.on_exit(lambda: speed_up(slow_lab_host))

    def create(name):
        vm, _ = do_create_vm(user, project, name=name, cores=1, memory_mib=128, disk_mib=1024, image=image)
        return vm

    def running(vm) -> float:
        return wait(lambda: VM.objects.filter(pk=vm.pk, status="running").exists(), 600, f"{vm.name} running")

    def delete_all():
        pks = list(VM.objects.exclude(status="deleted").values_list("pk", flat=True))
        wait(lambda: not VM.objects.filter(pk__in=pks).exclude(status__in=["running", "error"]).exists(), 600,
             "VMs settled")
        for vm in VM.objects.filter(pk__in=pks):
            do_delete_vm(user, vm)
        wait(lambda: not VM.objects.filter(pk__in=pks).exclude(status="deleted").exists(), 600, "VMs deleted")

    results = {}
    worker = None
    for label, slowed, slots in ROUNDS:
        if worker is not None:
            plane.stop(worker)
        plane.env["UNCLOUD_HOST_WORKER_SLOTS"] = slots
        worker = plane.worker(3)
        do_mark_host_draining(None, slow)
        # Untimed, three at once so each of the 3 new processes likely opens its SSH connection to the
        # healthy host (each process keeps its own), and the base image is there.
        for warm in [create(f"warm-{label[:4]}-{index}") for index in range(3)]:
            running(warm)
        do_enable_host(None, slow)
        if slowed:
            slow_down(slow_lab_host, args.cpu_percent)
            # The backlog: creates placed on the slow host while the healthy one takes nothing new.
            do_mark_host_draining(None, healthy)
            backlog = [create(f"backlog-{label[:4]}-{index}").pk for index in range(args.backlog)]
            wait(lambda backlog=backlog: VM.objects.filter(pk__in=backlog, host=slow).count() == len(backlog), 300,
                 "backlog placed")
            do_enable_host(None, healthy)
        do_mark_host_draining(None, slow)
        times = []
        for index in range(args.creates):
            started = time.monotonic()
            vm = create(f"timed-{label[:4]}-{index}")
            ended = running(vm)
            times.append(ended - started)
            assert VM.objects.get(pk=vm.pk).host_id == healthy.pk
            print(f"{label}: create {index + 1} running after {ended - started:.2f} s", file=sys.stderr, flush=True)
        results[label] = times
        if slowed:
            speed_up(slow_lab_host)
        do_enable_host(None, slow)
        delete_all()

    print(f"\ncreate-to-running on the healthy host ({args.creates} creates a round, one after another; "
          f"the slow host: {args.cpu_percent} % of a CPU, {args.backlog} creates queued on it)")
    print(f"{'':16}{'p50':>9}{'p95':>9}{'max':>9}   x baseline (p50)")
    base = statistics.median(results["baseline"])
    for label, times in results.items():
        median = statistics.median(times)
        print(f"{label:16}{median:>8.2f}s{nearest_rank(times, 95):>8.2f}s{max(times):>8.2f}s   {median / base:.2f}")
    print("goal: the healthy host's create-to-running unchanged by a slow host (issue 21)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
