"""Real Celery workers (and beat) for tests, on the test database and a queue of their own.

`celery_processes(broker_url=None, **settings)` starts workers/beat (the host watcher, the console gateway) with extra UNCLOUD_* settings
in their environment; they are stopped after the test. Loaded by the root conftest.
"""

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.db import connection

from uncloud_project.celery import app as celery_app

BASE_DIR = Path(__file__).resolve().parents[1]


def database_url() -> str:
    settings = connection.settings_dict
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    return (f"postgres://{settings['USER']}{password}@{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}"
            f"/{settings['NAME']}")


class CeleryProcesses:
    def __init__(self, tmp_path: Path, queue: str, env: dict):
        self.tmp_path = tmp_path
        self.queue = queue
        self.env = env
        self.processes: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def _start(self, kind: str, argv: list[str]) -> subprocess.Popen:
        return self._spawn(kind, [sys.executable, "-m", "celery", "-A", "uncloud_project", *argv])

    def _spawn(self, kind: str, argv: list[str]) -> subprocess.Popen:
        log_path = self.tmp_path / f"{kind}-{len(self.logs)}.log"
        self.logs.append(log_path)
        process = subprocess.Popen(
            argv, cwd=BASE_DIR, env=self.env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def watcher(self) -> subprocess.Popen:
        """The heartbeat watcher (`manage.py watch_hosts`) on the same database and settings."""
        return self._spawn("watcher", [sys.executable, "manage.py", "watch_hosts", "--loglevel=INFO"])

    def console_gateway(self, bind: str) -> subprocess.Popen:
        """The console gateway (`manage.py console_gateway`) on the same database and settings."""
        return self._spawn("console", [sys.executable, "manage.py", "console_gateway", "--bind", bind])

    def worker(self, concurrency: int = 1) -> subprocess.Popen:
        return self._start("worker", [
            "worker", "-Q", self.queue, f"--concurrency={concurrency}", "--loglevel=INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ])

    def beat(self) -> subprocess.Popen:
        return self._start("beat", ["beat", "--loglevel=INFO", "-s", str(self.tmp_path / f"beat-{len(self.logs)}")])

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL the whole process group: the worker's pool children die with it, mid-task."""
        with contextlib.suppress(ProcessLookupError):  # it may have ended already
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def celery_processes(tmp_path, transactional_db):
    """Start real Celery processes: `procs = celery_processes(UNCLOUD_...=...)`, then
    `procs.worker()`, `procs.beat()`, `procs.kill(worker)`. A private queue keeps other messages out."""
    if connection.vendor != "postgresql" or not celery_app.conf.broker_url.startswith("redis://"):
        pytest.fail("worker tests run against PostgreSQL and Redis: use the README's test command")
    made: list[CeleryProcesses] = []
    old_queue = celery_app.conf.task_default_queue
    old_broker = celery_app.conf.broker_url

    def make(broker_url: str | None = None, **settings) -> CeleryProcesses:
        queue = f"uncloud-test-{uuid.uuid4().hex[:8]}"
        env = dict(os.environ, DATABASE_URL=database_url(), CELERY_TASK_DEFAULT_QUEUE=queue,
                   UNCLOUD_DATA_DIR=str(tmp_path / f"celery-data-{len(made)}"),
                   **{key: str(value) for key, value in settings.items()})
        if broker_url:
            env["CELERY_BROKER_URL"] = broker_url
            _use_broker(broker_url)
        celery_app.conf.task_default_queue = queue
        processes = CeleryProcesses(tmp_path, queue, env)
        made.append(processes)
        return processes

    yield make
    for processes in made:
        processes.stop_all()
    celery_app.conf.task_default_queue = old_queue
    if celery_app.conf.broker_url != old_broker:
        _use_broker(old_broker)


def _use_broker(url: str) -> None:
    """Point this process's enqueueing at another broker: forget the pooled connections and producers
    (Celery makes new pools from conf.broker_url on next use; the old ones are left to the GC, since
    closing them would also close kombu's shared pools)."""
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    celery_app.conf.broker_url = url
    # Celery reads CELERY_BROKER_URL from the environment before its own setting (Settings.broker_url).
    os.environ["CELERY_BROKER_URL"] = url
