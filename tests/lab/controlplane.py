"""The lab as the control plane sees it: lab hosts registered as Host rows (the one way to do it), a
public network, the demo image, and waits on VMs and operations. Used by the lab tests of every app
and by bench/."""

import os
import signal
from decimal import Decimal
from pathlib import Path

from django.utils import timezone

from agents.choices import HostTransport
from agents.hosts import agent_for
from agents.models import Host, Operation
from images.demo import publish_demo_image
from networks.actions import do_create_public_network
from networks.models import Network, PrefixPool
from tests.lab.waiting import wait_for
from vms.models import VM

LAB_POOL = "fd00:5eed::/48"


def lab_settings(lab, **overrides) -> dict:
    """What a worker needs to drive the lab: its SSH key, TCG (KVM cannot boot guests here), short waits."""
    values = {
        "UNCLOUD_SSH_KEY_FILE": str(lab.hosts[0].client_key_path),
        "UNCLOUD_VM_ACCEL": "tcg",
        "UNCLOUD_VM_STOP_TIMEOUT": 5,
        "UNCLOUD_SSH_COMMAND_TIMEOUT": 60,
    }
    values.update(overrides)
    return values


def apply_lab_settings(settings, values: dict) -> None:
    for key, value in values.items():
        setattr(settings, key, int(value) if isinstance(value, int) else value)


def register_lab_hosts(lab, hosts=None, *, cores=8, memory_mib=8192, cpu_overbooking="1.0") -> list[Host]:
    """The lab's hosts as Host rows, checked for real (host-info over SSH fills in the facts)."""
    rows = []
    for lab_host in hosts or lab.hosts:
        host = Host.objects.create(
            name=lab_host.name, transport=HostTransport.SSH, ssh_address=lab_host.ssh_address,
            ssh_port=lab_host.ssh_port, ssh_user=lab_host.ssh_user, host_key=lab_host.host_key,
            underlay_device=lab_host.underlay_device, underlay_address=lab_host.underlay_address,
            state_dir=str(lab_host.state_dir), cores=cores,
            memory_mib=memory_mib, disk_gib=100, cpu_overbooking=Decimal(cpu_overbooking),
            memory_overbooking=Decimal("1.0"),
        )
        facts = agent_for(host).call("host-info")
        Host.objects.filter(pk=host.pk).update(facts=facts, last_heartbeat=timezone.now())
        host.refresh_from_db()
        rows.append(host)
    return rows


def use_lab(lab, settings, hosts=None, *, cores=8, memory_mib=8192, cpu_overbooking="1.0", **overrides):
    """Point this test's control plane at the lab: its settings (and the worker's: the first value
    returned), the lab's hosts as checked Host rows, and the public network. (values, hosts, network)."""
    values = lab_settings(lab, **overrides)
    apply_lab_settings(settings, values)
    rows = register_lab_hosts(lab, hosts, cores=cores, memory_mib=memory_mib, cpu_overbooking=cpu_overbooking)
    return values, rows, public_network()


def public_network() -> Network:
    if not PrefixPool.objects.filter(prefix=LAB_POOL).exists():
        PrefixPool.objects.create(prefix=LAB_POOL, description="lab tests")
    return Network.objects.filter(is_public=True).first() or do_create_public_network(None, "public")


def demo_image():
    return publish_demo_image()


def wait_for_status(vm: VM, status: str, processes=None, timeout=120) -> VM:
    def reached():
        vm.refresh_from_db()
        return vm.status == status

    def why():
        now = VM.objects.get(pk=vm.pk)
        return f"{vm.name} did not become {status} (is {now.status}: {now.status_message}; " \
               f"operations: {operations_of(vm)})"

    wait_for(reached, timeout=timeout, log_paths=processes.logs if processes else (), message=why)
    return vm


def wait_for_operation(operation: Operation, processes=None, timeout=120) -> Operation:
    def finished():
        operation.refresh_from_db()
        return operation.state in ("succeeded", "failed", "cancelled")

    wait_for(finished, timeout=timeout, log_paths=processes.logs if processes else (),
             message=f"operation {operation.kind} did not finish")
    return operation


def operations_of(vm: VM) -> list[tuple]:
    return list(Operation.objects.filter(target_uuid=vm.uuid).order_by("created")
                .values_list("kind", "state", "step", "error"))


def qemu_pids(vm: VM) -> list[int]:
    """Live (non-zombie) qemu processes of this VM, found by its UUID on their command line."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if state != "Z" and cmdline and cmdline[0].endswith(b"qemu-system-x86_64") and str(vm.uuid).encode() in cmdline:
            pids.append(int(entry))
    return pids


def kill_qemu(vm: VM) -> int:
    (pid,) = qemu_pids(vm)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: pid not in qemu_pids(vm), timeout=10, message="qemu did not die")
    return pid


def serial_log(vm: VM) -> str:
    path = Path(vm.host.state_dir) / "vms" / str(vm.uuid) / "serial.log"
    return path.read_text(errors="replace") if path.exists() else ""
