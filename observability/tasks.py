from celery import shared_task

from agents.models import Host
from observability import sampling


@shared_task(name="observability.sample_vms")
def sample_vms() -> int:
    hosts = sampling.hosts_to_sample(Host.objects.all())
    for host in hosts:
        sample_host.delay(host.id)
    sampling.prune_samples()
    return len(hosts)


@shared_task(name="observability.sample_host", acks_late=True)
def sample_host(host_id: int) -> int:
    host = Host.objects.filter(id=host_id).first()
    return sampling.sample_host(host) if host is not None else 0
