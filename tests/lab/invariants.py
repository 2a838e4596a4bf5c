"""What every fault test ends with: each VM in its desired state exactly once (one qemu for a VM
meant to run, none otherwise), no operation left unfinished, and no qemu on a lab host that no VM
wants. `settled_problems()` says what is still wrong; `wait_until_settled()` waits for none."""

import os
from pathlib import Path

from agents.choices import TERMINAL_OPERATION_STATES
from agents.models import Operation
from tests.lab.controlplane import operations_of, qemu_pids
from tests.lab.waiting import wait_for
from vms.models import VM


def lab_qemu_processes(lab) -> dict[int, str]:
    """{pid: command line} of the live qemu processes started in any of the lab's state dirs."""
    state_dirs = [str(host.state_dir).encode() for host in lab.hosts]
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        argv0 = cmdline.split(b"\0", 1)[0]
        if state != "Z" and argv0.endswith(b"qemu-system-x86_64") and any(d in cmdline for d in state_dirs):
            found[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def settled_problems(lab, vms) -> list[str]:
    problems = []
    wanted_running = set()
    for vm in VM.objects.filter(pk__in=[vm.pk for vm in vms]):
        pids = qemu_pids(vm)
        if vm.desired_state == "running":
            wanted_running.add(str(vm.uuid))
            if vm.status != "running" or len(pids) != 1:
                problems.append(f"{vm.name}: {vm.status} with {len(pids)} qemu, meant to run once "
                                f"({vm.status_message}; {operations_of(vm)})")
        elif vm.status != vm.desired_state or pids:
            problems.append(f"{vm.name}: {vm.status} with {len(pids)} qemu, meant to be {vm.desired_state}")
    unfinished = list(Operation.objects.exclude(state__in=TERMINAL_OPERATION_STATES)
                      .values_list("kind", "state", "step", "error"))
    if unfinished:
        problems.append(f"unfinished operations: {unfinished}")
    orphans = [cmdline[:120] for cmdline in lab_qemu_processes(lab).values()
               if not any(vm_uuid in cmdline for vm_uuid in wanted_running)]
    if orphans:
        problems.append(f"qemu no VM wants: {orphans}")
    return problems


def wait_until_settled(lab, vms, processes=None, timeout=180) -> None:
    wait_for(lambda: not settled_problems(lab, vms), timeout=timeout,
             log_paths=processes.logs if processes else (),
             message=lambda: "not settled: " + "; ".join(settled_problems(lab, vms)))
