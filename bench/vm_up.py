#!/usr/bin/env python3
"""Benchmark: time from the `vm-up` call to QMP "running" with the NIC on the bridge, against the
bare seed shell script (ip link + qemu, no control plane) doing the same steps in the same run.

    .venv/bin/python bench/vm_up.py --runs 20

Builds a one-host lab (tests/lab), ships the host-side program and brings network VNI up once,
then alternates the two methods run by run. See bench/README.md for what exactly is timed.
Needs root (the lab uses network namespaces). Goal from the issue: ratio uncloud/seed <= 1.5.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agents.hostagent import HostAgent, close_streams  # noqa: E402
from agents.transport import HostConnection, close_all  # noqa: E402
from images.demo_guest import build_demo_guest  # noqa: E402
from networks.addressing import eui64_address  # noqa: E402
from tests.lab import Lab, LabHost, lab_unavailable_reason  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
SEED_SCRIPT = BENCH_DIR / "seed_vm_up.sh"
PROFILER = BENCH_DIR / "profile_hostside.py"
GOAL_RATIO = 1.5
VNI = 100
PREFIX = "fd00:bec:0:64::/64"
MEMORY_MIB = 256
CORES = 1
SEED_TIMEOUT_S = 60
POLL_STATUS_TIMEOUT_S = 30


@dataclass
class Samples:
    label: str
    seconds: list[float] = field(default_factory=list)

    def percentile(self, fraction: float) -> float:
        # Linear interpolation between closest ranks (numpy's default), so p95 of 20 samples
        # lies between the 19th and 20th value instead of snapping to the maximum.
        ordered = sorted(self.seconds)
        position = (len(ordered) - 1) * fraction
        lower = int(position)
        upper = min(lower + 1, len(ordered) - 1)
        return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


@dataclass
class BootInputs:
    """Files inside the host's state_dir (vm-up only accepts paths below it)."""

    base_disk: Path
    images_dir: Path

    def fresh_overlay(self, host: LabHost, name: str) -> Path:
        """A new qcow2 overlay on the demo disk, made before the clock starts."""
        overlay = self.images_dir / f"{name}.qcow2"
        overlay.unlink(missing_ok=True)
        host.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.base_disk), "-F", "qcow2",
                  str(overlay)])
        return overlay


def prepare_boot_inputs(host: LabHost) -> BootInputs:
    guest = build_demo_guest()
    images_dir = host.state_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    # A copy rather than a symlink: vm-up checks paths below state_dir after resolving links,
    # and the overlays' backing file should be on the same file system as the overlays.
    base_disk = images_dir / "demo-base.qcow2"
    shutil.copyfile(guest.disk_qcow2, base_disk)
    return BootInputs(base_disk=base_disk, images_dir=images_dir)


def mac_for(kind: int, run_index: int) -> str:
    # 52:54:00 is qemu's prefix, far from the router MAC range 02:75:63 that vm-up refuses.
    return f"52:54:00:b0:{kind:02x}:{run_index:02x}"


# --- the two methods -------------------------------------------------------------------------------

def time_uncloud_vm_up(agent: HostAgent, inputs: BootInputs, host: LabHost, run_index: int) -> float:
    vm_uuid = str(uuid.uuid4())
    mac = mac_for(1, run_index)
    disk = inputs.fresh_overlay(host, f"uc-{run_index}")
    spec = {
        "uuid": vm_uuid, "name": f"bench-uc-{run_index}", "cores": CORES, "memory_mib": MEMORY_MIB,
        "disks": [{"path": str(disk), "format": "qcow2"}],
        "nics": [{"mac": mac, "vni": VNI, "ipv6": eui64_address(PREFIX, mac)}],
        "accel": "tcg",
    }
    try:
        started = time.perf_counter()
        answer = agent.call("vm-up", spec)
        status = answer["status"]
        # vm-up normally answers with "running" already; if it ever answers earlier, the time
        # until vm-status says so belongs to vm-up's figure.
        deadline = started + POLL_STATUS_TIMEOUT_S
        while status != "running":
            if time.perf_counter() > deadline:
                raise RuntimeError(f"vm-up: VM never reported running (last status {status!r})")
            time.sleep(0.01)
            status = agent.call("vm-status", {"uuid": vm_uuid})["status"]
        elapsed = time.perf_counter() - started
    finally:
        agent.call("vm-down", {"uuid": vm_uuid, "hard": True})
        disk.unlink(missing_ok=True)
    return elapsed


def time_seed_script(host: LabHost, inputs: BootInputs, run_index: int) -> float:
    vm_uuid = str(uuid.uuid4())
    tap = f"seed{run_index}"
    vm_dir = host.state_dir / "seed" / vm_uuid
    disk = inputs.fresh_overlay(host, f"seed-{run_index}")
    argv = ["ip", "netns", "exec", host.netns, "bash", str(SEED_SCRIPT), f"br{VNI}", tap, mac_for(2, run_index),
            str(vm_dir), str(disk), str(MEMORY_MIB), str(CORES), f"bench-seed-{run_index}", vm_uuid]
    try:
        started = time.perf_counter()
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=SEED_TIMEOUT_S)
        elapsed = time.perf_counter() - started
        if completed.returncode != 0:
            raise RuntimeError(f"seed script failed ({completed.returncode}): {completed.stderr.strip()}")
    finally:
        stop_seed_vm(host, vm_dir, tap)
        disk.unlink(missing_ok=True)
    return elapsed


def stop_seed_vm(host: LabHost, vm_dir: Path, tap: str) -> None:
    try:
        pid = int((vm_dir / "qemu.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pid = None
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
            while Path(f"/proc/{pid}").exists():  # the tap stays busy until qemu is gone
                time.sleep(0.005)
        except ProcessLookupError:
            pass
    host.run(["ip", "link", "del", "dev", tap], check=False)
    shutil.rmtree(vm_dir, ignore_errors=True)


def time_call(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def measure_transport(agent: HostAgent, calls: int) -> list[Samples]:
    """What every call pays before the host-side program does any work."""
    transport = agent.transport
    measured = [
        Samples("host-info (whole call)"),
        Samples("ssh exec of `true`"),
        Samples("ssh exec of `python3 -c pass`"),
    ]
    actions = [
        lambda: agent.call("host-info"),
        lambda: transport.run(["true"]),
        # "python3" as HostAgent runs it: resolved by the remote login shell's PATH.
        lambda: transport.run(["python3", "-c", "pass"]),
    ]
    for _ in range(calls):
        for samples, action in zip(measured, actions, strict=True):
            samples.seconds.append(time_call(action))
    return measured


# --- profile: where vm-up's time goes on the host ------------------------------------------------

def command_label(argv: list[str], device_names: set[str]) -> str:
    name = Path(argv[0]).name
    if name.startswith("qemu-system"):
        return name
    words = [name] + ["<dev>" if word in device_names else word for word in argv[1:]
                      if not word.startswith("/")]
    return " ".join(words[:7])


def profile_vm_up(agent: HostAgent, inputs: BootInputs, host: LabHost, runs: int, seed: Samples) -> None:
    """Run vm-up locally in the host's namespace (no SSH) under bench/profile_hostside.py, which
    times each external command; print the median of each step and of the whole verb."""
    program = agent._program_path()
    reports = []
    totals = []
    for run_index in range(runs):
        vm_uuid = str(uuid.uuid4())
        mac = mac_for(3, run_index)
        disk = inputs.fresh_overlay(host, f"prof-{run_index}")
        spec = {
            "state_dir": str(host.state_dir), "uuid": vm_uuid, "name": f"bench-prof-{run_index}",
            "cores": CORES, "memory_mib": MEMORY_MIB, "disks": [{"path": str(disk), "format": "qcow2"}],
            "nics": [{"mac": mac, "vni": VNI, "ipv6": eui64_address(PREFIX, mac)}], "accel": "tcg",
        }
        try:
            started = time.perf_counter()
            # /usr/bin/python3 -I -S: the interpreter alone, whatever PATH or site-packages say.
            completed = host.run(["/usr/bin/python3", "-I", "-S", str(PROFILER), program, "vm-up"],
                                 input=json.dumps(spec))
            totals.append(time.perf_counter() - started)
            answer = json.loads(completed.stdout)
            if not answer.get("ok") or answer["result"]["status"] != "running":
                raise RuntimeError(f"profiled vm-up failed: {completed.stdout}")
            report = json.loads(completed.stderr.strip().splitlines()[-1])
            report["taps"] = answer["result"]["taps"]
            reports.append(report)
        finally:
            agent.call("vm-down", {"uuid": vm_uuid, "hard": True})
            disk.unlink(missing_ok=True)

    def median_ms(milliseconds_values) -> str:
        return f"{statistics.median(milliseconds_values):7.1f}"

    print()
    print(f"profile: vm-up run locally in the namespace (ip netns exec, /usr/bin/python3 -I -S, no SSH), "
          f"median of {runs} runs, ms")
    print(f"  {'whole process (ip netns exec .. python3 .. vm-up)':<58}{statistics.median(totals) * 1000:7.1f}")
    local_ratio = statistics.median(totals) / seed.percentile(0.5)
    print(f"  {'  ratio to the seed script p50 (same ip netns exec start)':<58}{local_ratio:7.2f}")
    print(f"  {'import of the host-side program':<58}{median_ms(r['import_ms'] for r in reports)}")
    print(f"  {'verb vm-up':<58}{median_ms(r['verb_ms'] for r in reports)}")
    print(f"  {'  of which in external commands':<58}{median_ms(r['in_commands_ms'] for r in reports)}")
    devices = {f"br{VNI}"} | {tap for r in reports for tap in r["taps"]}
    steps = max(len(r["commands"]) for r in reports)
    for step in range(steps):
        present = [r["commands"][step] for r in reports if len(r["commands"]) > step]
        label = command_label(present[0][1], devices)
        print(f"    {step + 1:>2}. {label:<51}{median_ms(c[0] for c in present)}")


# --- report ----------------------------------------------------------------------------------------

def machine_description() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    qemu_version = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                                  text=True).stdout.splitlines()[0]
    return (f"machine: nproc {len(os.sched_getaffinity(0))}, {model}, kernel {platform.release()}, "
            f"{qemu_version}; accel TCG (no KVM)")


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:7.0f}"


def print_report(uncloud: Samples, seed: Samples, transport_figures: list[Samples], warmup: int) -> None:
    runs = len(uncloud.seconds)
    print()
    print(f"vm-up to QMP 'running', NIC on br{VNI}: {runs} runs each, alternating, "
          f"{warmup} warm-up run(s) each not counted")
    print(machine_description())
    print(f"guest: demo disk via fresh qcow2 overlay, {MEMORY_MIB} MiB, {CORES} core, virtio-net on a tap")
    print()
    print(f"{'ms':<28}{'p50':>8}{'p95':>8}{'min':>8}{'max':>8}")
    for samples in (uncloud, seed):
        print(f"{samples.label:<28}{milliseconds(samples.percentile(0.5))} {milliseconds(samples.percentile(0.95))}"
              f" {milliseconds(min(samples.seconds))} {milliseconds(max(samples.seconds))}")
    ratio_p50 = uncloud.percentile(0.5) / seed.percentile(0.5)
    ratio_p95 = uncloud.percentile(0.95) / seed.percentile(0.95)
    print(f"{'ratio uncloud/seed':<28}{ratio_p50:8.2f}{ratio_p95:8.2f}")
    verdict = "met" if max(ratio_p50, ratio_p95) <= GOAL_RATIO else "NOT met"
    print(f"goal ratio <= {GOAL_RATIO}: {verdict}")
    print()
    print(f"transport, over the already open SSH connection ({len(transport_figures[0].seconds)} calls each), ms:")
    for samples in transport_figures:
        print(f"  {samples.label:<34} p50 {milliseconds(samples.percentile(0.5))}   "
              f"p95 {milliseconds(samples.percentile(0.95))}")


# --- main ------------------------------------------------------------------------------------------

def raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="measured runs of each method (default 20)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="uncounted runs of each method first, to warm page cache and qemu (default 1)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="afterwards, run vm-up N times locally with each host command timed")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be at least 1 and --warmup not negative")
    reason = lab_unavailable_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2

    # A kill should tear the lab down like Ctrl-C does.
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    # Short: the host's state_dir must stay within 57 characters (unix socket paths below it).
    workdir = Path(tempfile.mkdtemp(prefix="ucb-", dir="/tmp"))
    lab = Lab(workdir, n_hosts=1)
    try:
        lab.up()
        host = lab.hosts[0]
        agent = HostAgent(
            HostConnection(name=host.name, address=host.ssh_address, port=host.ssh_port, user=host.ssh_user,
                           host_key=host.host_key, key_file=str(host.client_key_path)),
            str(host.state_dir),
        )
        agent.ship()
        agent.call("net-up", {"vni": VNI, "prefix": PREFIX, "underlay_device": host.underlay_device})
        inputs = prepare_boot_inputs(host)

        transport_figures = measure_transport(agent, max(args.runs, 10))

        uncloud = Samples("uncloud vm-up (SSH)")
        seed = Samples("seed script (ip + qemu)")
        total = args.warmup + args.runs
        for run_index in range(total):
            counted = run_index >= args.warmup
            # Alternate which method goes first, so neither always follows the other's teardown.
            order = ("uncloud", "seed") if run_index % 2 == 0 else ("seed", "uncloud")
            figures = {}
            for method in order:
                if method == "uncloud":
                    figures[method] = time_uncloud_vm_up(agent, inputs, host, run_index)
                else:
                    figures[method] = time_seed_script(host, inputs, run_index)
            if counted:
                uncloud.seconds.append(figures["uncloud"])
                seed.seconds.append(figures["seed"])
            tag = "run" if counted else "warm-up"
            print(f"{tag} {run_index + 1 - (args.warmup if counted else 0):>2}: uncloud {figures['uncloud'] * 1000:6.0f} ms"
                  f"   seed {figures['seed'] * 1000:6.0f} ms", file=sys.stderr, flush=True)
        print_report(uncloud, seed, transport_figures, args.warmup)
        if args.profile:
            profile_vm_up(agent, inputs, host, args.profile, seed)
        return 0
    except KeyboardInterrupt:
        print("interrupted: tearing the lab down", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        close_streams()
        close_all()
        lab.down()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
