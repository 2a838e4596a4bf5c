"""`manage.py console_gateway`: the browser console's WebSocket gateway (consoles/gateway.py).
Any number may run behind a load balancer; each ends its own sessions when it stops."""

import asyncio
import logging

from django.conf import settings
from django.core.management.base import BaseCommand

from consoles.gateway import Gateway


class Command(BaseCommand):
    help = "Relay browser consoles (noVNC, xterm.js) to the VMs' VNC and serial sockets over SSH."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default=None, help="address:port (default UNCLOUD_CONSOLE_BIND)")
        parser.add_argument("--loglevel", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    def handle(self, *args, **options):
        logging.basicConfig(level=options["loglevel"], format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("websockets").setLevel(logging.WARNING)
        asyncio.run(Gateway(options["bind"] or settings.UNCLOUD_CONSOLE_BIND).serve())
