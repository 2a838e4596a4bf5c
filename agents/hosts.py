"""Host rows to connections and agents, and the host check workflow."""

from contextlib import contextmanager

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts import audit
from agents.choices import HostStatus, HostTransport
from agents.hostagent import HostAgent, HostError
from agents.models import Host
from agents.operations import PermanentStepError, Step, TransientStepError, register_workflow, start_operation
from agents.transport import HostConnection, TransportError


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


def agent_for(host: Host) -> HostAgent:
    return HostAgent(connection_for(host), host.state_dir)


def call_host(host: Host, verb: str, spec: dict | None = None, timeout: float | None = None) -> dict:
    """Run a host verb from inside a workflow step, translating failures into step errors."""
    with host_errors_as_step_errors():
        return agent_for(host).call(verb, spec, timeout=timeout)


@contextmanager
def host_errors_as_step_errors():
    """Transport and host-side failures as the Operation engine's step errors (transient ones retry)."""
    try:
        yield
    except TransportError as error:
        if error.transient:
            raise TransientStepError(str(error)) from None
        raise PermanentStepError(str(error)) from None
    except HostError as error:
        if error.transient:
            raise TransientStepError(str(error), details=error.details()) from None
        raise PermanentStepError(str(error), details=error.details()) from None


def _probe_host(operation):
    host = Host.objects.get(id=operation.host_id)
    facts = call_host(host, "host-info", timeout=60)
    updates = {"facts": facts, "last_heartbeat": timezone.now(), "last_error": ""}
    # Staff may set capacity by hand; what the host reports fills in what was left empty.
    if not host.cores and facts.get("cores"):
        updates["cores"] = facts["cores"]
    if not host.memory_mib and (facts.get("memory_mib") or {}).get("total"):
        updates["memory_mib"] = facts["memory_mib"]["total"]
    if not host.disk_gib and facts.get("disk_free_bytes"):
        updates["disk_gib"] = facts["disk_free_bytes"] // 1024**3
    if host.status == HostStatus.DOWN:
        updates["status"] = HostStatus.ENABLED
    Host.objects.filter(id=host.id).update(**updates)
    return {"host_info": facts}


def _probe_failed(operation):
    Host.objects.filter(id=operation.host_id).update(last_error=operation.error[:2000])


register_workflow("host.check", [Step("probe", _probe_host)], on_failure=_probe_failed)


@transaction.atomic
def do_check_host(actor, host: Host):
    audit.record(actor, "host.check", target=host)
    return start_operation("host.check", target=host, host=host, created_by=actor)
