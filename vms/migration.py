"""Live migration of a running VM to another host, as an operation of idempotent steps.

    vm.migrate        plan -> prepare -> transfer -> switch -> clean_source
    vm.migrate_abort  abort          (started by a failed vm.migrate: the VM runs on at its source)

plan        picks the destination (the scheduler, unless staff named one), waits for a free
            migration slot on both hosts (UNCLOUD_MIGRATION_MAX_OUTGOING/_INCOMING), and marks the
            VM migrating.
prepare     the key the source made for this VM's migration is let in on the destination (for the
            relay to this VM's incoming sockets only, removed when the move ends), the
            destination gets the base images, empty local disks, the metadata, the VM's networks
            and the metadata service, then qemu with the same device model waiting for the guest
            (`vm-incoming`: ports, taps and firewall rules are in place before it can run).
transfer    the source mirrors local disks into the destination's NBD exports and sends the
            guest, both through SSH between the hosts' underlay addresses (`migrate-send`; the
            mirrors complete while the guest is paused before the switchover). Alongside, the
            destination waits for the guest and continues it the moment it is all there
            (`migrate-finish` with wait_s, NBD server stopped, announced): no poll of the source
            and no round trip through the control plane is in the guest's pause.
            QEMU's figures (total time, downtime, bytes) land in the operation's result.
switch      source mirror targets and tunnel released, the migration key revoked on the
            destination; the VM row (and its local disks) name the destination from now on.
clean_source  the source qemu quits, its local disks and metadata go, networks no VM there
            needs any more go down, NAT64 maps follow the VM.

A failure before `switch` ends the operation failed and starts vm.migrate_abort, which cancels
the migration on the source (the guest runs on there) and removes everything the destination
got: qemu, taps, disks, metadata. If the guest already runs on the destination, abort finishes
the move instead: a VM never runs twice and is never lost.
"""

import contextvars
import threading
import time

from django.conf import settings
from django.db import connections, transaction

from agents.choices import TERMINAL_OPERATION_STATES
from agents.hostagent import HostError
from agents.hosts import agent_for, call_host, host_errors_as_step_errors, staff_detail
from agents.models import Host, Operation
from agents.operations import PermanentStepError, Step, StepWaiting, register_workflow, start_operation, wake_waiting
from images import hostwork
from images.baseimage import IMAGE_COPY_TIMEOUT_S, ensure_base_image
from images.choices import StorageBackend
from images.models import Disk
from networks.models import IPv4Address, IPv4Pool
from networks.specs import net_up_spec
from networks.workflows import request_nat64_sync
from vms import scheduler
from vms.choices import VMStatus
from vms.models import VM
from vms.nic_workflows import release_network_if_unused
from vms.specs import vm_up_spec
from vms.workflows import set_status, step_disks, step_networks_and_boot, vm_networks, vm_of

MIGRATE = "vm.migrate"
COLD = "vm.move"  # a stopped VM (or one staff stop for it) moves with its disks
ABORT = "vm.migrate_abort"
DRAIN = "host.drain"  # vms/drain.py: waits for the migrations it started
# What the API and the portal show of a migration (the rest of the result is for the steps).
FIGURES = ("source", "destination", "total_time_ms", "downtime_ms", "ram_transferred_bytes", "mirror_bytes",
           "downtime_limit_ms", "elapsed_ms", "migration_status")


def hosts_of(operation) -> tuple[Host, Host]:
    result = operation.result
    try:
        return Host.objects.get(name=result["source"]), Host.objects.get(name=result["destination"])
    except (KeyError, Host.DoesNotExist):
        raise PermanentStepError("The migration has no source or destination host.") from None


def migrations_in_flight(*, exclude_id: int):
    """Moves past planning that have not finished (they hold a slot, and room on their destination):
    the plan step writes the destination in the transaction that chose it."""
    return Operation.objects.filter(kind__in=[MIGRATE, COLD], result__has_key="destination").exclude(
        state__in=TERMINAL_OPERATION_STATES).exclude(id=exclude_id)


def step_plan(operation):
    vm = vm_of(operation)
    if vm.status not in (VMStatus.RUNNING, VMStatus.MIGRATING) or vm.host is None:
        raise PermanentStepError(f"{vm.name} is {vm.get_status_display().lower()}; only a running VM moves live.")
    return plan_destination(operation, vm)


def step_plan_cold(operation):
    vm = vm_of(operation)
    if vm.status not in (VMStatus.RUNNING, VMStatus.STOPPED, VMStatus.MIGRATING) or vm.host is None:
        raise PermanentStepError(f"{vm.name} is {vm.get_status_display().lower()}; it cannot move now.")
    was_running = operation.result.get("was_running", vm.status == VMStatus.RUNNING)
    return plan_destination(operation, vm, was_running=was_running)


def plan_destination(operation, vm: VM, **also) -> dict:
    """The destination (and `also`) written to the operation's result in the transaction that holds
    the candidate hosts' locks: from its commit on, the scheduler counts the VM there (its room is
    held) and the move holds its migration slots."""
    source = vm.host
    with transaction.atomic():
        # The VM's row before the hosts' (the lock order, vms/scheduler.py): set_status() below writes it.
        VM.objects.select_for_update(no_key=True).filter(pk=vm.pk).values_list("id", flat=True).first()
        named = operation.payload.get("destination")
        if named:
            destination = Host.objects.select_for_update().filter(name=named).first()
            if destination is None:
                raise PermanentStepError(f"There is no host {named}.")
            problem = scheduler.cannot_take(vm, destination)
            if problem:
                raise PermanentStepError(f"{destination.name} cannot take {vm.name}: {problem}.")
        else:
            destination = scheduler.destination_for(vm)
            if destination is None:
                raise PermanentStepError(f"No other host has room for {vm.name}.")
        busy = migrations_in_flight(exclude_id=operation.id)  # live and cold moves share the slots
        outgoing = busy.filter(host=source).count()
        incoming = busy.filter(result__destination=destination.name).count()
        if outgoing >= settings.UNCLOUD_MIGRATION_MAX_OUTGOING or incoming >= settings.UNCLOUD_MIGRATION_MAX_INCOMING:
            raise StepWaiting(f"Waiting for a free migration slot ({source.name}: {outgoing} outgoing, "
                              f"{destination.name}: {incoming} incoming).")
        set_status(vm, VMStatus.MIGRATING, f"Moving to {destination.name}.")
        planned = {"source": source.name, "destination": destination.name, "started_at": time.time(), **also}
        Operation.objects.filter(pk=operation.pk).update(result={**operation.result, **planned})
    return planned


def step_prepare(operation):
    vm = vm_of(operation)
    source, destination = hosts_of(operation)
    if vm.host_id != source.id:
        raise PermanentStepError(f"{vm.name} is no longer on {source.name}.")
    with host_errors_as_step_errors():
        facts = agent_for(source).call("migrate-source-prepare", {"uuid": str(vm.uuid)})
        wanted = ("running",) if operation.kind == MIGRATE else ("prelaunch", "paused")
        if facts.get("status") not in wanted:
            raise PermanentStepError(f"{vm.name} is {facts.get('status')} on {source.name}, not {wanted[0]}.")
        target = agent_for(destination)
        target.call("migration-authorize", {"uuid": str(vm.uuid), "source": source.name,
                                            "public_key": facts["public_key"],
                                            **({"source_address": source.underlay_address}
                                               if source.underlay_address else {})})
        disks = destination_disks(target, vm)
        calls = [("net-up", net_up_spec(network, destination)) for network in vm_networks(vm)]
        calls.append(("metadata-up", {}))
        spec = vm_up_spec(vm, disks)
        if facts.get("accel"):
            spec["accel"] = facts["accel"]  # the same CPU model as the source runs
        calls.append(("vm-incoming", {**spec, "expect_mirrored": facts["mirrored_drives"]}))
        answer = target.call_batch(calls, timeout=120)[-1]
    if answer.get("status") not in ("inmigrate", "paused", "running"):
        raise PermanentStepError(f"The guest waits on {destination.name} as {answer.get('status')}: "
                                 f"{answer.get('qmp_error') or ''}")
    return {"mirrored_drives": facts["mirrored_drives"], "destination_pid": answer.get("pid")}


def destination_disks(agent, vm: VM) -> list[dict]:
    """The VM's disks as vm-up names them on the destination: empty local disks of the same size
    over the same base image (the mirror fills them), the shared RBD disks, and the config drive."""
    entries = []
    for disk in hostwork.vm_disks_in_order(vm):
        if disk.storage == StorageBackend.RBD:
            entries.append(hostwork.ensure_disk(agent, disk))
            continue
        spec = {"disk_uuid": str(disk.uuid), "size_mib": disk.size_mib}
        if disk.image is not None and disk.role == "root":
            spec["base_sha256"] = disk.image.checksum_sha256
            ensure_base_image(agent, disk.image)
        answer = agent.call("disk-ensure", spec, timeout=IMAGE_COPY_TIMEOUT_S)
        entries.append({"path": answer["path"], "format": "qcow2"})
    drive = agent.call("vm-metadata", hostwork.metadata_spec(vm))["config_drive"]
    entries.append({"path": drive, "format": "raw", "readonly": True})
    return entries


def migration_parameters(operation) -> dict:
    return {"downtime_ms": settings.UNCLOUD_MIGRATION_DOWNTIME_MS,
            "max_downtime_ms": settings.UNCLOUD_MIGRATION_MAX_DOWNTIME_MS,
            "bandwidth_mib": operation.payload.get("bandwidth_mib") or settings.UNCLOUD_MIGRATION_BANDWIDTH_MIB,
            "auto_converge": settings.UNCLOUD_MIGRATION_AUTO_CONVERGE,
            "timeout_s": settings.UNCLOUD_MIGRATION_TIMEOUT,
            "mirror_timeout_s": settings.UNCLOUD_MIGRATION_TIMEOUT,  # both inside the one limit
            "step_s": settings.UNCLOUD_MIGRATION_DOWNTIME_STEP_S,
            "disks_only": operation.kind == COLD}


# What the customer reads when the stream itself fails; QEMU's words and the figures go to staff.
MOVE_FAILURES = {
    "migration_failed": "The move did not complete; the VM keeps running where it was.",
    "not_converged": "The VM's memory changed faster than it could be copied; the move was given up and "
                     "the VM keeps running where it was.",
}


def step_transfer(operation):
    vm = vm_of(operation)
    source, destination = hosts_of(operation)
    if not destination.underlay_address:
        raise PermanentStepError(f"{destination.name} has no underlay address: staff must set it.")
    spec = {"uuid": str(vm.uuid), "parameters": migration_parameters(operation),
            "destination": {"address": destination.underlay_address, "port": destination.ssh_port,
                            "host_key": destination.host_key}}
    with host_errors_as_step_errors():
        arrival = ArrivalWatch(agent_for(destination), str(vm.uuid)) if operation.kind == MIGRATE else None
        try:
            figures = agent_for(source).call("migrate-send", spec, timeout=settings.UNCLOUD_MIGRATION_TIMEOUT + 180)
        except HostError as error:
            # The watch ends by itself: the abort stops the destination's qemu, or wait_s runs out.
            if error.code in MOVE_FAILURES:
                details = "\n".join(part for part in (staff_detail(error), str(error.extra.get("figures", ""))) if part)
                raise PermanentStepError(MOVE_FAILURES[error.code], details=details) from None
            raise
        if arrival is not None:
            arrived = arrival.result()
    if operation.kind == MIGRATE and arrived.get("status") != "running":
        raise PermanentStepError(f"The guest is {arrived.get('status')} on {destination.name} after the move.")
    return {key: figures.get(key) for key in ("migration_status", "total_time_ms", "downtime_ms", "setup_time_ms",
                                              "ram_transferred_bytes", "ram_total_bytes", "mirror_bytes",
                                              "downtime_limit_ms")}


class ArrivalWatch:
    """migrate-finish on the destination, in a thread of its own while the source sends: the host
    continues the guest the moment it has arrived. result() is its answer; a watch that failed
    (a dropped connection) or has not answered by then is asked again at once."""

    def __init__(self, agent, vm_uuid: str):
        self.agent, self.vm_uuid = agent, vm_uuid
        self.answer, self.error = None, None
        wait_s = settings.UNCLOUD_MIGRATION_TIMEOUT + 120  # the send's own limit, and its setup
        # In the step's context: its host calls carry the step's claim (agents.hostagent.acting_for).
        self.thread = threading.Thread(target=contextvars.copy_context().run, args=(self._watch, wait_s),
                                       daemon=True, name=f"arrival-{vm_uuid[:8]}")
        self.thread.start()

    def _watch(self, wait_s: float) -> None:
        try:
            self.answer = self.agent.call("migrate-finish", {"uuid": self.vm_uuid, "wait_s": wait_s},
                                          timeout=wait_s + 60)
        except Exception as error:  # handed to result(), in the step's thread
            self.error = error
        finally:
            connections.close_all()  # this thread's own (the agent asks whether the host is silent)

    def result(self, timeout_s: float = 60) -> dict:
        self.thread.join(timeout_s)
        if self.thread.is_alive() or self.error is not None:
            # The source said `completed`: the guest is there (or its qemu is gone, and this call
            # says so). Asked again at once, not after a retry's backoff with the guest paused.
            return self.agent.call("migrate-finish", {"uuid": self.vm_uuid, "wait_s": 30}, timeout=90)
        return self.answer


def step_switch(operation):
    vm = vm_of(operation)
    source, destination = hosts_of(operation)
    with host_errors_as_step_errors():
        if vm.host_id == source.id:
            agent_for(source).call("migrate-source-release", {"uuid": str(vm.uuid)})
        cold = operation.kind == COLD
        if cold:
            # The mirrors were in step and are cancelled: the disks are here now. The waiting qemu
            # never received a guest; stopping it (SIGTERM) closes the disks cleanly.
            calls = [("vm-down", {"uuid": str(vm.uuid), "hard": True})]
        else:
            calls = [("migrate-finish", {"uuid": str(vm.uuid)})]  # already done by transfer: it checks
        calls.append(("migration-deauthorize", {"uuid": str(vm.uuid)}))
        answer = agent_for(destination).call_batch(calls, timeout=120)[0]
    if not cold and answer.get("status") != "running":
        raise PermanentStepError(f"The guest is {answer.get('status')} on {destination.name} after the move.")
    move_rows(vm, destination)
    return {}


def move_rows(vm: VM, destination: Host) -> None:
    """From now on the VM (and its local disks) live on the destination."""
    with transaction.atomic():
        VM.objects.filter(pk=vm.pk).update(host=destination)
        for disk in Disk.objects.filter(vm=vm).exclude(storage=StorageBackend.RBD):
            Disk.objects.filter(pk=disk.pk).update(
                host=destination, location=f"{destination.state_dir}/disks/{disk.uuid}.qcow2")
        for pool in IPv4Pool.objects.filter(pk__in=IPv4Address.objects.filter(nic__vm=vm).values("pool")):
            request_nat64_sync(pool)  # the translator routes the VM's /128 to its new host


def step_clean_source(operation):
    vm = vm_of(operation)
    source, _ = hosts_of(operation)
    with host_errors_as_step_errors():
        remove_from_host(agent_for(source), vm, source)
    released = [network.vni for network in vm_networks(vm) if release_network_if_unused(source, network)]
    started_at = operation.result.get("started_at")
    return {"released_networks": released,
            "elapsed_ms": round((time.time() - started_at) * 1000) if started_at else None}


def remove_from_host(agent, vm: VM, host: Host) -> None:
    """The VM's qemu, taps, rules, local disks and metadata off a host it does not live on."""
    calls = [("vm-down", {"uuid": str(vm.uuid), "hard": True, "purge": True, "timeout_s": 0}),
             ("migrate-abort", {"uuid": str(vm.uuid)})]
    calls += [("disk-delete", {"disk_uuid": str(disk.uuid)})
              for disk in Disk.objects.filter(vm=vm).exclude(storage=StorageBackend.RBD)]
    calls.append(("vm-metadata-delete", {"uuid": str(vm.uuid)}))
    calls.append(("migration-deauthorize", {"uuid": str(vm.uuid)}))  # a destination it never reached
    agent.call_batch(calls, timeout=120)


def wake_movers():
    """A migration slot is free and a VM has settled: parked migrations and drains go on."""
    transaction.on_commit(lambda: wake_waiting([MIGRATE, COLD, DRAIN]))


def migrated(operation):
    vm = VM.objects.filter(uuid=operation.target_uuid).first()
    if vm is not None:
        set_status(vm, VMStatus.RUNNING)
    wake_movers()


def migration_failed(operation):
    """Every failure ends in vm.migrate_abort, which leaves the VM running at one place."""
    vm = VM.objects.filter(uuid=operation.target_uuid).first()
    if vm is None:
        return
    start_operation(ABORT, project=vm.project, target=vm, host=vm.host,
                    payload={**operation.result, "migration": str(operation.uuid), "kind": operation.kind,
                             "error": operation.error[:2000]})
    transaction.on_commit(lambda: wake_waiting([MIGRATE, COLD]))  # its slot is free; a drain waits for the abort


def step_abort(operation):
    vm = vm_of(operation)
    if "source" not in operation.payload or "destination" not in operation.payload:
        return {"outcome": "nothing to undo"}
    source = Host.objects.get(name=operation.payload["source"])
    destination = Host.objects.get(name=operation.payload["destination"])
    with host_errors_as_step_errors():
        arrived = agent_for(destination).call("vm-status", {"uuid": str(vm.uuid)})
        if vm.host_id == destination.id or arrived.get("status") == "running":
            # The switch happened: finish the move rather than run the guest twice.
            if vm.host_id != destination.id:
                move_rows(vm, destination)
            agent_for(source).call("migrate-source-release", {"uuid": str(vm.uuid)})
            remove_from_host(agent_for(source), vm, source)
            for network in vm_networks(vm):
                release_network_if_unused(source, network)
            return {"outcome": f"finished the move to {destination.name}"}
        cold = operation.payload.get("kind") == COLD
        answer = agent_for(source).call("migrate-abort", {"uuid": str(vm.uuid), "resume": not cold})
        if cold:
            agent_for(source).call("vm-down", {"uuid": str(vm.uuid), "hard": True})  # the paused copy
        remove_from_host(agent_for(destination), vm, destination)
    for network in vm_networks(vm):
        release_network_if_unused(destination, network)
    return {"outcome": f"runs on {source.name}", "source_status": answer.get("status")}


def aborted(operation):
    vm = VM.objects.filter(uuid=operation.target_uuid).first()
    if vm is None:
        return
    message = f"The move failed and was undone: {operation.payload.get('error', '')}"[:2000]
    if operation.payload.get("kind") != COLD:
        set_status(vm, VMStatus.RUNNING, message)
    elif operation.payload.get("was_running"):
        set_status(vm, VMStatus.STARTING, message)  # staff stopped it for the move: it runs again
        start_operation("vm.start", project=vm.project, target=vm, host=vm.host, payload={"by": "vm.move abort"})
    else:
        set_status(vm, VMStatus.STOPPED, message)
    wake_movers()


def abort_failed(operation):
    vm = VM.objects.filter(uuid=operation.target_uuid).first()
    if vm is not None:
        set_status(vm, VMStatus.ERROR, f"A failed move could not be undone: {operation.error}"[:2000])
    wake_movers()


register_workflow(
    MIGRATE,
    [Step("plan", step_plan), Step("prepare", step_prepare), Step("transfer", step_transfer),
     Step("switch", step_switch), Step("clean_source", step_clean_source)],
    on_success=migrated, on_failure=migration_failed,
)
register_workflow(ABORT, [Step("abort", step_abort)], on_success=aborted, on_failure=abort_failed)


# --- cold: a stopped VM's disks move (a running one is stopped first, and started again there) ---
#
#     vm.move   plan -> stop -> boot_paused -> prepare -> transfer -> switch -> clean_source -> disks -> boot
#
# The disks travel the live path: the source starts the guest paused (-S: it runs no instruction)
# and mirrors its local disks into the NBD exports of a qemu waiting on the destination, through
# the SSH tunnel, until they are in step; nothing writes to them, so cancelling the mirrors leaves
# two equal copies, and both qemu stop. Same encryption, same cleanup on failure, no second copy
# mechanism, and no memory sent.

def was_running(operation) -> bool:
    return bool(operation.result.get("was_running"))


def step_stop_for_move(operation):
    if not was_running(operation):
        return {}
    vm = vm_of(operation)
    source, _ = hosts_of(operation)
    answer = call_host(source, "vm-down", {"uuid": str(vm.uuid), "timeout_s": settings.UNCLOUD_VM_STOP_TIMEOUT},
                       timeout=settings.UNCLOUD_VM_STOP_TIMEOUT + 60)
    return {"stopped_by": answer.get("stopped_by")}


def step_boot_paused(operation):
    vm = vm_of(operation)
    source, _ = hosts_of(operation)
    with host_errors_as_step_errors():
        agent = agent_for(source)
        disks = hostwork.ensure_vm_disks(agent, vm)
        calls = [("net-up", net_up_spec(network, source)) for network in vm_networks(vm)]
        calls.append(("vm-up", {**vm_up_spec(vm, disks), "paused": True}))
        answer = agent.call_batch(calls, timeout=120)[-1]
    if answer.get("status") not in ("prelaunch", "paused"):
        raise PermanentStepError(f"The guest is {answer.get('status')} on {source.name}; a cold move needs it "
                                 "stopped.")
    return {}


def when_it_was_running(step):
    def run(operation):
        return step(operation) if was_running(operation) else {}
    return run


def moved_cold(operation):
    vm = VM.objects.filter(uuid=operation.target_uuid).first()
    if vm is not None:
        set_status(vm, VMStatus.RUNNING if was_running(operation) else VMStatus.STOPPED)
    wake_movers()


register_workflow(
    COLD,
    [Step("plan", step_plan_cold), Step("stop", step_stop_for_move), Step("boot_paused", step_boot_paused),
     Step("prepare", step_prepare), Step("transfer", step_transfer), Step("switch", step_switch),
     Step("clean_source", step_clean_source), Step("disks", when_it_was_running(step_disks)),
     Step("boot", when_it_was_running(step_networks_and_boot))],
    on_success=moved_cold, on_failure=migration_failed,
)

