"""The only writers of domain names and proxy hosts: each in one transaction with its audit row."""

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts import audit
from accounts.errors import Conflict
from accounts.quotas import lock_project
from agents.operations import active_operation, start_operation
from proxy import signals
from proxy.choices import DomainStatus
from proxy.models import DomainName
from proxy.names import normalize_domain_name
from vms.choices import VMStatus

TAKEN = "This name is taken."


def _check_vm(vm, project):
    if vm.project_id != project.pk or vm.status in (VMStatus.DELETING, VMStatus.DELETED):
        raise Conflict("The VM must be a live VM of the name's project.")


def start_proof(actor, domain: DomainName):
    """Publish the challenge path, fetch it through the proxy, then serve the name."""
    return start_operation("domain.prove", project=domain.project, target=domain, created_by=actor)


@transaction.atomic
def do_create_domain(actor, project, vm, name: str, *, proxy_protocol: bool = False) -> DomainName:
    name = normalize_domain_name(name)
    project = lock_project(project)
    _check_vm(vm, project)
    if DomainName.objects.filter(project=project).count() >= settings.UNCLOUD_PROXY_NAMES_PER_PROJECT:
        raise Conflict(f"A project may have {settings.UNCLOUD_PROXY_NAMES_PER_PROJECT} names; delete one first.")
    if DomainName.objects.filter(name=name).exists():
        raise Conflict(TAKEN)  # whose it is stays private
    try:
        with transaction.atomic():
            domain = DomainName.objects.create(project=project, vm=vm, name=name, proxy_protocol=proxy_protocol)
    except IntegrityError:
        raise Conflict(TAKEN) from None  # claimed a moment ago by someone else
    audit.record(actor, "domain.create", project=project, target=domain, name=name, vm=str(vm.uuid))
    signals.domain_created.send(sender=DomainName, domain=domain)
    start_proof(actor, domain)
    return domain


@transaction.atomic
def do_update_domain(actor, domain: DomainName, *, vm=None, proxy_protocol: bool | None = None) -> DomainName:
    """Point a name at another VM of its project, or switch the PROXY protocol. A proven name stays
    proven: the proof was the project's control of the name, not of one VM."""
    from proxy.workflows import request_proxy_sync

    domain = DomainName.objects.select_for_update().get(pk=domain.pk)
    changed = {}
    if vm is not None and vm.pk != domain.vm_id:
        _check_vm(vm, domain.project)
        domain.vm = vm
        changed["vm"] = str(vm.uuid)
    if proxy_protocol is not None and proxy_protocol != domain.proxy_protocol:
        domain.proxy_protocol = proxy_protocol
        changed["proxy_protocol"] = proxy_protocol
    if changed:
        domain.save(update_fields=["vm", "proxy_protocol"])
        audit.record(actor, "domain.update", project=domain.project, target=domain, **changed)
        transaction.on_commit(request_proxy_sync)
    return domain


@transaction.atomic
def do_verify_domain(actor, domain: DomainName) -> DomainName:
    """Prove the name again (after a failed proof, or to renew one)."""
    domain = DomainName.objects.select_for_update().get(pk=domain.pk)
    if active_operation(domain.uuid) is not None:
        raise Conflict("A proof of this name is under way.")
    if domain.status != DomainStatus.PROVEN:
        domain.status, domain.status_message = DomainStatus.PENDING, ""
        domain.save(update_fields=["status", "status_message"])
    audit.record(actor, "domain.verify", project=domain.project, target=domain)
    start_proof(actor, domain)
    return domain


@transaction.atomic
def do_delete_domain(actor, domain: DomainName) -> None:
    from proxy.workflows import request_proxy_sync

    domain = DomainName.objects.select_for_update().get(pk=domain.pk)
    audit.record(actor, "domain.delete", project=domain.project, target=domain, name=domain.name)
    signals.domain_deleted.send(sender=DomainName, domain=domain)
    domain.delete()
    transaction.on_commit(request_proxy_sync)


def do_record_proof(domain_id: int, proven: bool, message: str = "") -> None:
    """The proof workflow's verdict, by conditional update: a name deleted meanwhile stays deleted."""
    values = {"status": DomainStatus.PROVEN if proven else DomainStatus.FAILED, "status_message": message[:500]}
    if proven:
        values["proven_at"] = timezone.now()
    DomainName.objects.filter(pk=domain_id).update(**values)
