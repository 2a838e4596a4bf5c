"""Take every guest and network of this machine down: what `bin/run --down` runs.

bin/run stops only the control plane (web, worker, beat), like a production control plane that is
restarted without touching customer VMs. This is the other half for a demo or development machine:
qemu guests, radvd, the metadata service, NAT64 translators, bridges, VXLANs and the nft tables of
every host this machine runs itself (local transport) go down. Disks and images stay, and the
database is left as it is: VMs that should run start again with the next bin/run (the reconciler).
"""

from django.core.management.base import BaseCommand

from agents.choices import HostTransport
from agents.hostagent import HostError
from agents.hosts import agent_for
from agents.models import Host
from agents.transport import TransportError


class Command(BaseCommand):
    help = "Stop every guest and take every network of this machine's local hosts down (bin/run --down)."

    def add_arguments(self, parser):
        parser.add_argument("--hard", action="store_true", help="kill guests at once instead of an ACPI powerdown")
        parser.add_argument("--timeout", type=int, default=30,
                            help="seconds a guest gets to power down before it is killed (default 30)")

    def handle(self, *args, hard=False, timeout=30, **options):
        hosts = list(Host.objects.filter(transport=HostTransport.LOCAL).order_by("name"))
        if not hosts:
            self.stdout.write("  this machine runs no host (no host with local transport)")
            return
        failed = False
        for host in hosts:
            try:
                answer = agent_for(host).call(
                    "host-down", {"timeout_s": timeout, "hard": hard, "underlay_device": host.underlay_device},
                    timeout=timeout * 10 + 120)
            except (HostError, TransportError) as error:
                self.stderr.write(f"  {host.name}: {error}")
                failed = True
                continue
            self.stdout.write(
                f"  {host.name}: stopped {len(answer['stopped_vms'])} guest(s), took {len(answer['networks_down'])} "
                f"network(s) down, removed the metadata service and nft tables")
            for change in answer["changes"]:
                self.stdout.write(f"    {change}", style_func=None)
        if failed:
            raise SystemExit(1)
