"""`manage.py watch_hosts`: the heartbeat watcher (agents/liveness.py), a process of its own beside
the Celery workers, so a heartbeat never waits for a free worker. Run exactly one."""

import logging
import signal

from django.core.management.base import BaseCommand

from agents.liveness import HostWatcher


class Command(BaseCommand):
    help = "Heartbeat every host, detect failed hosts (with a second opinion from their peers) and fence them."

    def add_arguments(self, parser):
        parser.add_argument("--loglevel", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    def handle(self, *args, **options):
        logging.basicConfig(level=options["loglevel"], format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        watcher = HostWatcher()
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signal_number, lambda *_: watcher.stop.set())
        logging.getLogger(__name__).info("watching hosts")
        watcher.run_forever()
