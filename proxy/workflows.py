"""Proxy work on hosts, as Operations (agents/operations.py runs them one idempotent step at a time).

    proxy.sync     sync                        (a proxy host gets the whole state: names, keys, routes)
    domain.prove   publish -> challenge -> serve
                   (every proxy host routes the name's challenge path; the control plane fetches it
                   through the proxy; the proven name is served in full)
"""

from django.utils import timezone

from agents.choices import OperationState
from agents.hosts import call_host
from agents.models import Operation
from agents.operations import (
    PermanentStepError,
    Step,
    TransientStepError,
    register_workflow,
    start_operation,
)
from proxy.actions import do_record_proof
from proxy.challenge import ChallengeFailed, fetch_challenge
from proxy.models import DomainName, ProxyHost
from proxy.specs import proxy_host_specs


def request_proxy_sync():
    """Start a sync of every proxy host unless one is queued that has not read the state yet."""
    for proxy_host in ProxyHost.objects.select_related("host"):
        if Operation.objects.filter(target_uuid=proxy_host.uuid, kind="proxy.sync", state=OperationState.PENDING,
                                    attempts=0, lease_until__isnull=True).exists():
            continue
        start_operation("proxy.sync", target=proxy_host, host=proxy_host.host)


def sync_proxy_host(proxy_host: ProxyHost) -> dict:
    answer = call_host(proxy_host.host, "batch", {"calls": proxy_host_specs(proxy_host)})
    ProxyHost.objects.filter(pk=proxy_host.pk).update(synced_at=timezone.now(), sync_error="")
    return answer


def step_sync(operation):
    proxy_host = ProxyHost.objects.select_related("host").filter(uuid=operation.target_uuid).first()
    if proxy_host is None:
        raise PermanentStepError("The proxy host no longer exists.")
    results = sync_proxy_host(proxy_host)["results"]
    return {"names": results[0].get("names", 0), "keys": results[1].get("keys", 0)}


def sync_failed(operation):
    ProxyHost.objects.filter(uuid=operation.target_uuid).update(sync_error=operation.error[:2000])


register_workflow("proxy.sync", [Step("sync", step_sync)], on_failure=sync_failed)


# --- proving a name -----------------------------------------------------------------------------------

def _domain(operation) -> DomainName:
    domain = DomainName.objects.filter(uuid=operation.target_uuid).first()
    if domain is None:
        raise PermanentStepError("The name was deleted.")
    return domain


def _active_proxy_hosts():
    proxy_hosts = list(ProxyHost.objects.filter(is_active=True).select_related("host"))
    if not proxy_hosts:
        raise PermanentStepError("No proxy host is in service; staff must designate one.")
    return proxy_hosts


def step_sync_everywhere(operation):
    """publish (the challenge path is routed) and serve (the proven name is): every proxy host syncs."""
    _domain(operation)
    for proxy_host in _active_proxy_hosts():
        sync_proxy_host(proxy_host)
    return {}


def step_challenge(operation):
    """A wrong or missing answer is retried with backoff (the customer may be setting it up); after the
    last attempt the name is marked failed with what was seen."""
    domain = _domain(operation)
    addresses = [proxy_host.public_ipv4 for proxy_host in _active_proxy_hosts()]
    try:
        fetch_challenge(domain.name, domain.challenge_path, domain.proof_token, addresses)
    except ChallengeFailed as error:
        raise TransientStepError(str(error)) from None
    do_record_proof(domain.pk, proven=True)
    return {"proven": domain.name}


def prove_failed(operation):
    domain = DomainName.objects.filter(uuid=operation.target_uuid).first()
    if domain is not None and domain.proven_at is None:
        do_record_proof(domain.pk, proven=False, message=operation.error)
        request_proxy_sync()  # the failed name's challenge route goes


register_workflow("domain.prove", [Step("publish", step_sync_everywhere), Step("challenge", step_challenge),
                                   Step("serve", step_sync_everywhere)], on_failure=prove_failed)
