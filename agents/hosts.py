"""Host rows to connections and agents, and the host check workflow."""

import contextvars
import logging
import threading
from contextlib import contextmanager

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from accounts import audit
from agents.actions import do_mark_host_up
from agents.choices import HostLiveness, HostStatus, HostTransport
from agents.hostagent import HostAgent, HostError
from agents.models import Host
from agents.operations import PermanentStepError, Step, TransientStepError, register_workflow, start_operation
from agents.transport import HostConnection, TransportError

log = logging.getLogger(__name__)


def connection_for(host: Host) -> HostConnection:
    return HostConnection(
        name=host.name,
        transport=host.transport,
        address=host.ssh_address,
        port=host.ssh_port,
        user=host.ssh_user,
        host_key=host.host_key,
        key_file=settings.UNCLOUD_SSH_KEY_FILE if host.transport == HostTransport.SSH else "",
        connect_timeout=settings.UNCLOUD_SSH_CONNECT_TIMEOUT,
        command_timeout=settings.UNCLOUD_SSH_COMMAND_TIMEOUT,
    )


def agent_for(host: Host, *, even_if_silent: bool = False, read_just_now: bool = True) -> HostAgent:
    """An agent for the host's work. Unless even_if_silent, it refuses to call a host the heartbeat
    watcher no longer hears, and gives up a call in flight once the host goes silent: one dead host
    never holds a worker for a call's whole timeout. read_just_now=False: `host` was read earlier
    (a step before, or before a long call), so whether it is silent is asked afresh."""
    give_up = None if even_if_silent else SilenceCheck(host, trust_the_row=read_just_now)
    return HostAgent(connection_for(host), host.state_dir, give_up=give_up)


class SilenceCheck:
    """Why not to call `host` now, or None. The first question is answered from the row in hand when
    the step has just read it (trust_the_row): a statement per host call was a tenth of a create's. A
    host that went silent since is caught by the next question, which the call in flight asks about
    once a second. A row read before a call that may have taken seconds is never trusted: a host the
    watcher called silent meanwhile must not be called (its guests may be restarting elsewhere)."""

    def __init__(self, host: Host, trust_the_row: bool = True):
        self.host = host
        self.asked = not trust_the_row

    def __call__(self) -> str | None:
        if not self.asked and self.host.liveness == HostLiveness.ALIVE:
            self.asked = True
            return None
        self.asked = True
        return silent_host_reason(self.host.pk)


def warm_host_connections() -> list[str]:
    """Connect this process to every enabled host it hears, ahead of any work: the first call of a
    process to a host (SSH handshake, the program's checksum, starting its `serve` process) costs
    100 ms on an idle machine and was seen at 0.5 to 1.3 s among booting guests, a cost that fell
    on a customer's create. Workers call it in the background as they start (uncloud_project/
    celery.py). Returns the names of the hosts it could not reach (they are the heartbeat
    watcher's business, not this one's; their first call connects as before)."""
    failed = []
    for host in Host.objects.filter(status__in=[HostStatus.ENABLED, HostStatus.DRAINING],
                                    liveness=HostLiveness.ALIVE).order_by("id"):
        try:
            agent_for(host).warm(timeout=settings.UNCLOUD_SSH_CONNECT_TIMEOUT)
        except (TransportError, HostError) as error:
            log.info("could not warm the connection to %s: %s", host.name, error)
            failed.append(host.name)
    return failed


class HostCallInFlight:
    """A host call running in a thread of its own while the step does database work that does not
    need its answer: the host's time and the control plane's overlap instead of adding up. The
    thread only talks to the host (and asks whether it went silent, on a connection of its own that
    it closes); result() waits for it and raises what the call raised. Host calls carry the step's
    claim (agents.hostagent.acting_for): the thread runs in a copy of the caller's context."""

    def __init__(self, call):
        self._answer, self._error = None, None
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=self._run, args=(context, call), name="host-call", daemon=True)
        self._thread.start()

    def _run(self, context, call):
        try:
            self._answer = context.run(call)
        except BaseException as error:  # handed to the waiting step as it is
            self._error = error
        finally:
            connections.close_all()  # this thread's own, opened only if it asked whether the host is silent

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._answer


def silent_host_reason(host_id: int) -> str | None:
    row = Host.objects.filter(pk=host_id).values("name", "liveness", "liveness_since").first()
    if row is None or row["liveness"] == HostLiveness.ALIVE:
        return None
    since = f" since {row['liveness_since']:%H:%M:%S}" if row["liveness_since"] else ""
    return f"host {row['name']} is {row['liveness']}{since} (it does not answer its heartbeats)"


def call_host(host: Host, verb: str, spec: dict | None = None, timeout: float | None = None) -> dict:
    """Run a host verb from inside a workflow step, translating failures into step errors."""
    with host_errors_as_step_errors():
        return agent_for(host).call(verb, spec, timeout=timeout or settings.UNCLOUD_HOST_CALL_TIMEOUT)


# What a customer reads when a host verb fails: the cause in plain words. The host's own words (its
# name, state-dir paths, the command line, stderr) go to staff only (Operation.error_detail).
CUSTOMER_CAUSES = {
    "disk_full": "Its host ran out of disk space.",
    "timeout": "Its host did not finish in time.",
    "busy": "Its host is busy with other work on it.",
    "qemu_failed": "The virtual machine's process failed to start on its host.",
    "bad_image": "The image cannot be used (its format or contents were refused).",
    "checksum_mismatch": "A file copied to its host arrived damaged.",
    "missing_binary": "Its host lacks a program it needs.",
    "in_use": "Something on its host is still in use.",
    "not_found": "Something it needs is missing on its host.",
    "fenced": "Its host is fenced after a failure.",
    "stale_generation": "A newer start of this VM exists elsewhere.",
    "no_free_port": "Its host has no free port for it.",
}
UNREACHABLE = "Its host could not be reached."


def customer_cause(error: Exception) -> str:
    """The customer's words for a failed host call (TransportError or HostError)."""
    if isinstance(error, TransportError):
        return UNREACHABLE if error.transient else f"{UNREACHABLE} Staff have been told."
    cause = CUSTOMER_CAUSES.get(getattr(error, "code", ""))
    return cause or "Its host could not complete the work. Staff have been told."


def staff_detail(error: Exception) -> str:
    """Everything staff need: the host, its message and, for a HostError, stderr and the command."""
    details = error.details() if isinstance(error, HostError) else ""
    return "\n".join(part for part in (f"{type(error).__name__}: {error}", details) if part)


@contextmanager
def host_errors_as_step_errors():
    """Transport and host-side failures as the Operation engine's step errors (transient ones
    retry): the customer's cause as the message, the host's own words as the staff detail."""
    try:
        yield
    except (TransportError, HostError) as error:
        kind = TransientStepError if error.transient else PermanentStepError
        raise kind(customer_cause(error), details=staff_detail(error)) from None


def _probe_host(operation):
    host = Host.objects.get(id=operation.host_id)
    # A fresh KVM test guest at every check: a module or nesting setting changed since boot shows up.
    with host_errors_as_step_errors():  # staff may check a host the heartbeat watcher does not hear
        facts = agent_for(host, even_if_silent=True).call("host-info", {"probe_kvm": True}, timeout=60)
    updates = {"facts": facts, "last_heartbeat": timezone.now(), "last_error": ""}
    # Staff may set capacity by hand; what the host reports fills in what was left empty.
    if not host.cores and facts.get("cores"):
        updates["cores"] = facts["cores"]
    if not host.memory_mib and (facts.get("memory_mib") or {}).get("total"):
        updates["memory_mib"] = facts["memory_mib"]["total"]
    if not host.disk_gib and facts.get("disk_free_bytes"):
        updates["disk_gib"] = facts["disk_free_bytes"] // 1024**3
    Host.objects.filter(id=host.id).update(**updates)
    do_mark_host_up(host)  # a host that was down and answers is up again
    return {"host_info": facts}


def _probe_failed(operation):
    Host.objects.filter(id=operation.host_id).update(last_error=operation.error[:2000])


register_workflow("host.check", [Step("probe", _probe_host)], on_failure=_probe_failed)


@transaction.atomic
def do_check_host(actor, host: Host):
    audit.record(actor, "host.check", target=host)
    return start_operation("host.check", target=host, host=host, created_by=actor)


# --- returning a fenced host to service (staff) ----------------------------------------------

def _lift_storage_fence(operation):
    """Lift the Ceph blocklist of a fenced host (from the host itself: blocklisting refuses its
    data path, not its monitor commands), then let it run guests again."""
    from agents import liveness

    host = Host.objects.get(id=operation.host_id)
    if host.liveness != HostLiveness.FENCED:
        return {"skipped": f"host is {host.liveness}"}
    entries = []
    if host.storage_fenced_address:
        with host_errors_as_step_errors():
            answer = agent_for(host, even_if_silent=True).call(
                "ceph-blocklist", liveness.ceph_blocklist_spec(host.storage_fenced_address, "rm"), timeout=60)
        if answer.get("listed"):
            raise TransientStepError(f"{host.storage_fenced_address} is still in Ceph's blocklist")
        entries.append(liveness.fence_log_entry("storage lifted", True,
                                                f"ceph osd blocklist rm {host.storage_fenced_address}"))
    with transaction.atomic():
        updated = Host.objects.filter(pk=host.pk, liveness=HostLiveness.FENCED).update(
            liveness=HostLiveness.ALIVE, liveness_since=timezone.now(), fenced_at=None, storage_fenced_address="")
        if entries:
            liveness.append_fence_log(host, *entries)
    if updated:
        host.refresh_from_db()
        liveness.hooks.host_returned(host, True)
    return {"returned": bool(updated)}


register_workflow("host.return", [Step("lift_fence", _lift_storage_fence)])


@transaction.atomic
def do_return_host(actor, host: Host):
    """Staff bring a fenced host back: lift its Ceph blocklist, then its local VMs start in place."""
    audit.record(actor, "host.return", target=host)
    return start_operation("host.return", target=host, host=host, created_by=actor)
