"""Make a fresh installation usable: an admin, a demo customer, an IPv6 pool and public network,
and (optionally) this machine as a local hypervisor. Safe to run again: it only adds what is missing.
"""

import json
import os
import secrets
import socket
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts import actions as account_actions
from agents.choices import HostTransport
from agents.hosts import do_check_host
from agents.models import Host
from images.demo import publish_demo_image
from images.models import Image
from networks.actions import do_create_public_network
from networks.models import Network, PrefixPool

# Documentation prefix: fine for a machine that routes nothing to the internet.
DEMO_POOL = "2001:db8:100::/48"


class Command(BaseCommand):
    help = "Create the admin, a demo customer, a prefix pool and a public network if missing; register this machine."
    # bin/run runs migrate first, which prints the system checks' warnings (no DNS server...): once is enough.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--local-host", action="store_true", help="register this machine as a local hypervisor")
        parser.add_argument("--demo-image", action="store_true",
                            help="build the demo guest from Debian packages and publish it if no image exists")
        parser.add_argument("--pool", default=os.environ.get("UNCLOUD_DEMO_POOL", DEMO_POOL))

    def handle(self, *args, local_host=False, demo_image=False, pool=DEMO_POOL, **options):
        credentials_file = Path(settings.DATA_DIR) / "credentials.json"
        credentials = json.loads(credentials_file.read_text()) if credentials_file.exists() else {}
        with transaction.atomic():
            for username, is_staff in (("admin", True), ("demo", False)):
                if not get_user_model().objects.filter(username=username).exists():
                    password = secrets.token_urlsafe(12)
                    account_actions.do_create_user(username, password, is_staff=is_staff)
                    credentials[username] = password
            if not PrefixPool.objects.exists():
                PrefixPool.objects.create(prefix=pool, description="created by bootstrap")
            if not Network.objects.filter(is_public=True).exists():
                do_create_public_network(None, "public")
        credentials_file.write_text(json.dumps(credentials, indent=2))
        credentials_file.chmod(0o600)
        if local_host:
            self._register_local_host()
        if demo_image and not Image.objects.exists():
            image = publish_demo_image()
            self.stdout.write(f"  published the demo image {image.name}")
        for username in ("admin", "demo"):
            if username in credentials:
                self.stdout.write(f"  log in as {username} / {credentials[username]}")
            else:
                self.stdout.write(f"  {username}: password not known here (changed or created elsewhere)")

    def _register_local_host(self):
        name = socket.gethostname().lower().split(".")[0] or "localhost"
        host, created = Host.objects.get_or_create(
            transport=HostTransport.LOCAL,
            defaults={
                "name": name,
                "state_dir": _local_state_dir(),
                "underlay_device": _default_route_device(),
            },
        )
        if created:
            self.stdout.write(f"  registered this machine as hypervisor {host.name} (local transport)")
        do_check_host(None, host)


def _local_state_dir() -> str:
    # Sockets live below the state dir and unix socket paths are short: fall back to a short path.
    preferred = str(Path(settings.DATA_DIR) / "hosts" / "local")
    return preferred if len(preferred) <= 57 else "/var/lib/uncloud"


RTF_REJECT = 0x0200


def _default_route_device(ipv6_routes: str = "/proc/net/ipv6_route", ipv4_routes: str = "/proc/net/route") -> str:
    """The interface of this machine's default route: the underlay VXLAN multicast goes out on.
    IPv6 first (VXLAN runs over IPv6, and an IPv6-only machine has no IPv4 default), then IPv4."""
    try:
        for line in Path(ipv6_routes).read_text().splitlines():
            fields = line.split()
            if (len(fields) == 10 and fields[0] == "0" * 32 and fields[1] == "00" and fields[9] != "lo"
                    and not int(fields[8], 16) & RTF_REJECT):
                return fields[9]
    except OSError:
        pass
    try:
        for line in Path(ipv4_routes).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000":
                return fields[0]
    except OSError:
        pass
    return "lo"
