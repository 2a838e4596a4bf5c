"""Benchmark: what a Prometheus scrape costs, on the control plane and on one host.

    sudo DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/metrics.py \
        --vms 1000 --hosts 50 --exporter-vms 50

Control plane (issue goal: <= 1 s with 1,000 VMs and 50 hosts): a scratch database
(uncloud_bench_metrics, dropped first) is migrated and filled with hosts, VMs with disks, ten
finished operations per VM (durations recorded for 500 of them: those bucket rows stop growing), audit rows, bank entries and payments (not
timed); then GET /metrics (with the scraper token, through Django's whole request path) is timed
--runs times, beside GET /healthz through the same client as the baseline. Printed: p50/p95 of
both, the scrape's SQL queries and its size.

Host exporter (issue goal: <= 200 ms with 50 VMs): in a scratch network namespace (root) with one
tap per VM (so /proc/net/dev has 50 of them) and the host program's real nft rule set
for those ports loaded, --exporter-vms VMs answer QMP from one stand-in process
(tests/lab/fake_qmp.py: 50 TCG guests do not fit on this machine; per guest the exporter
does the same reads against it: /proc/PID/stat, a QMP query-blockstats round trip, its tap's
counters, its guard counters). The exporter's collect() is timed --runs times beside a baseline in
the same process: the same exporter with no guests (the host part alone). Without root, only the
control-plane half runs.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH_DB = "uncloud_bench_metrics"
TOKEN = "bench-metrics-token"


def percentiles(values):
    ordered = sorted(values)
    return ordered[len(ordered) // 2], ordered[max(0, int(len(ordered) * 0.95 + 0.5) - 1)]


def fill_database(n_vms: int, n_hosts: int, operations_per_vm: int) -> dict:
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from accounts.actions import do_create_user
    from accounts.models import AuditEntry, Project
    from agents.models import Host, Operation
    from billing.models import BankEntry, BankStatement
    from images.models import Disk
    from observability.models import JobStat, StepDuration
    from observability.recording import on_operation_finished, on_operation_step_ran
    from vms.models import VM

    random.seed(20)
    now = timezone.now()
    owner = do_create_user("bench", "bench-password-1")
    project = Project.objects.get(owner=owner)
    hosts = Host.objects.bulk_create([
        Host(name=f"hv{index:03d}", ssh_address=f"fd00:ff::{index + 1:x}", cores=64, memory_mib=262144,
             disk_gib=4000, last_heartbeat=now - timedelta(seconds=random.random() * 3)) for index in range(n_hosts)])
    statuses = ["running"] * 8 + ["stopped", "error"]
    vms = VM.objects.bulk_create([
        VM(project=project, name=f"vm-{index}", cores=random.choice([1, 2, 4]), memory_mib=random.choice([1024, 2048]),
           host=hosts[index % n_hosts], status=random.choice(statuses)) for index in range(n_vms)])
    Disk.objects.bulk_create([Disk(project=project, name=f"root-{vm.name}", size_mib=20480, vm=vm, role="root",
                                   status="in_use") for vm in vms])
    kinds = ["vm.create", "vm.stop", "vm.start", "vm.reboot", "vm.delete"]
    operations = []
    for vm in vms:
        for index in range(operations_per_vm):
            kind = kinds[index % len(kinds)]
            operations.append(Operation(kind=kind, target_kind="vm", target_uuid=vm.uuid, project=project,
                                        host=vm.host, state="succeeded" if random.random() > 0.05 else "failed",
                                        steps_total=3, steps_done=3))
    operations = Operation.objects.bulk_create(operations, batch_size=5000)
    Operation.objects.update(finished=timezone.now() + timedelta(seconds=15))
    for operation in operations[:500]:  # the bucket rows stop growing long before this
        on_operation_finished(None, operation, operation.state, 5 + random.random() * 60)
        for step in ("place", "disks", "boot"):
            on_operation_step_ran(None, operation, step, random.random() * 10, "succeeded")
    Operation.objects.bulk_create([Operation(kind="vm.create", state="pending") for _ in range(20)])
    AuditEntry.objects.bulk_create([AuditEntry(action=random.choice(["vm.create", "vm.stop", "vm.restart_by_reconciler",
                                                                     "host.suspect", "vm.start"]))
                                    for _ in range(n_vms * 5)], batch_size=10000)
    statement = BankStatement.objects.create(kind="camt054", sha256="0" * 64)
    BankEntry.objects.bulk_create([BankEntry(statement=statement, entry_key=f"e{index}", amount=Decimal("10.00"),
                                             currency="CHF", state=random.choice(["matched", "unmatched"]))
                                   for index in range(500)])
    JobStat.objects.create(task="billing.run_monthly_billing", runs=30, seconds=375, last_started=now,
                           last_seconds=12.5)
    return {"hosts": n_hosts, "vms": n_vms, "operations": Operation.objects.count(),
            "step_duration_rows": StepDuration.objects.count(), "audit_rows": AuditEntry.objects.count()}


def bench_control_plane(args) -> None:
    from bench.billing_run import prepare_database

    os.environ["DATABASE_URL"] = prepare_database(
        os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"), BENCH_DB)
    os.environ.setdefault("UNCLOUD_DATA_DIR", str(ROOT / "var" / "bench-metrics"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "uncloud_project.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["UNCLOUD_METRICS_TOKEN"] = TOKEN
    os.environ["ALLOWED_HOSTS"] = "testserver"  # Django's test client names itself so
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    filled = fill_database(args.vms, args.hosts, args.operations_per_vm)
    print(f"database: {filled} (filled in {time.perf_counter() - started:.1f} s, not timed)")
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    warm_up = client.get("/metrics", **headers)  # connections, imports
    assert warm_up.status_code == 200, warm_up.content[:500]
    client.get("/healthz")
    scrape, baseline = [], []
    for _ in range(args.runs):
        began = time.perf_counter()
        response = client.get("/metrics", **headers)
        scrape.append(time.perf_counter() - began)
        began = time.perf_counter()
        client.get("/healthz")
        baseline.append(time.perf_counter() - began)
    with CaptureQueriesContext(connection) as queries:
        body = client.get("/metrics", **headers).content
    lines = body.count(b"\n")
    p50, p95 = percentiles(scrape)
    b50, b95 = percentiles(baseline)
    print(f"control plane /metrics, {args.vms} VMs, {args.hosts} hosts: p50 {p50 * 1000:.0f} ms, "
          f"p95 {p95 * 1000:.0f} ms (goal <= 1000 ms); {len(queries.captured_queries)} SQL queries, "
          f"{len(body) / 1024:.0f} KiB, {lines} lines")
    print(f"baseline GET /healthz, same client: p50 {b50 * 1000:.1f} ms, p95 {b95 * 1000:.1f} ms; "
          f"scrape/baseline at p50: {p50 / b50:.0f}x")
    assert response.status_code == 200


INNER = r'''
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
from agents.hostside.uncloud_hostside import exporter
import concurrent.futures
state_dir, empty_dir, runs = sys.argv[2], sys.argv[3], int(sys.argv[4])
pool = concurrent.futures.ThreadPoolExecutor(max_workers=exporter.QMP_THREADS)
# As the daemon does: guard counters from the background reader (its nft call timed apart).
reader = exporter.GuardCounterReader(interval_s=3600).start()
for directory in (state_dir, empty_dir):
    exporter.collect(directory, pool, reader)
full, empty, nft = [], [], []
for _ in range(runs):
    began = time.perf_counter(); text = exporter.collect(state_dir, pool, reader); full.append(time.perf_counter() - began)
    began = time.perf_counter(); exporter.collect(empty_dir, pool, reader); empty.append(time.perf_counter() - began)
for _ in range(5):
    began = time.perf_counter(); exporter.read_guard_counters(); nft.append(time.perf_counter() - began)
print(json.dumps({"full": full, "empty": empty, "nft": nft, "lines": text.count("\n"), "bytes": len(text),
                  "qmp_errors": text.count("uncloud_vm_qmp_errors{"),
                  "guard_series": text.count("uncloud_vm_guard_dropped_packets_total{")}))
'''


def bench_exporter(args) -> None:
    from agents.hostside.uncloud_hostside.nft import render_ruleset
    from tests.lab.fake_qmp import start_fake_guests, stop, write_port

    netns = f"ucbench-metrics-{os.getpid()}"
    state_dir = Path(tempfile.mkdtemp(prefix="ucbm-", dir="/tmp"))
    empty_dir = Path(tempfile.mkdtemp(prefix="ucbe-", dir="/tmp"))
    vms = [str(uuid.uuid4()) for _ in range(args.exporter_vms)]
    fake = None
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        fake = start_fake_guests(state_dir, vms)
        ports = []
        for index, vm in enumerate(vms):
            tap = f"tap{index:04x}"
            mac = f"02:00:00:00:{index // 256:02x}:{index % 256:02x}"
            write_port(state_dir, vm, tap, mac)
            ports.append({"tap": tap, "mac": mac, "vm_uuid": vm, "vni": 1000, "ipv6": f"2001:db8::{index + 1:x}",
                          "link_local": f"fe80::{index + 1:x}", "ingress": []})
        subprocess.run(["ip", "-n", netns, "-b", "-"], check=True, text=True,
                       input="".join(f"tuntap add dev {port['tap']} mode tap\n" for port in ports))
        ruleset = render_ruleset([], ports)
        loaded = subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=ruleset, text=True,
                                capture_output=True)
        if loaded.returncode != 0:
            print(f"nft rule set not loaded ({loaded.stderr.strip()[:200]}): guard counters left out")
        answer = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", INNER, str(ROOT), str(state_dir),
                                 str(empty_dir), str(args.runs)], capture_output=True, text=True, check=True)
        figures = json.loads(answer.stdout)
        p50, p95 = percentiles(figures["full"])
        b50, b95 = percentiles(figures["empty"])
        print(f"host exporter, {len(vms)} VMs (stand-in QMP, real /proc, {len(vms)} taps, real nft table): "
              f"p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms (goal <= 200 ms); {figures['lines']} lines, "
              f"{figures['bytes'] / 1024:.0f} KiB, {figures['guard_series']} guard series, "
              f"{figures['qmp_errors']} QMP errors")
        n50, _ = percentiles(figures["nft"])
        print(f"guard counters: nft -j list table takes p50 {n50 * 1000:.0f} ms; the daemon reads them in the "
              "background when a scrape finds its last reading over 10 s old, so a scrape does not wait for it")
        print(f"baseline: the same exporter with no guests: p50 {b50 * 1000:.1f} ms, p95 {b95 * 1000:.1f} ms; "
              f"per guest {(statistics.median(figures['full']) - statistics.median(figures['empty'])) / len(vms) * 1000:.2f} ms")
    finally:
        if fake is not None:
            stop(fake)
        subprocess.run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(state_dir, ignore_errors=True)
        shutil.rmtree(empty_dir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--operations-per-vm", type=int, default=10)
    parser.add_argument("--exporter-vms", type=int, default=50)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--skip-control-plane", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, {os.uname().release}")
    if os.geteuid() == 0:
        bench_exporter(args)
    else:
        print("host exporter: skipped (needs root for its network namespace)")
    if not args.skip_control_plane:
        bench_control_plane(args)


if __name__ == "__main__":
    main()
