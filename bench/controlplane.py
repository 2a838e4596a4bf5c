"""The control plane a benchmark runs against: a lab (tests/lab) or none, a fresh PostgreSQL
database of its own, Django set up on it, and real Celery workers, beat and host watcher on a
private queue. One copy of that set-up for every script in bench/.

    with BenchControlPlane("bench", n_hosts=2) as plane:
        plane.configure(UNCLOUD_RECONCILE_INTERVAL="5")      # env, fresh database, migrate
        plane.worker(concurrency=4)
        ...                                                 # Django and the lab ready here

Leaving the block stops the processes, closes the SSH streams, runs what was registered with
`on_exit` (newest first), takes the lab down and removes the work directory.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (str(REPO), str(REPO / "bench")):
    if path not in sys.path:
        sys.path.insert(0, path)

CELERY = [sys.executable, "-m", "celery", "-A", "uncloud_project"]


def database_name(suffix: str) -> str:
    """A database of its own beside DATABASE_URL's (e.g. uncloud_h3 -> uncloud_h3_bench)."""
    return os.environ.get("DATABASE_URL", "/uncloud").rsplit("/", 1)[-1] + f"_{suffix}"


def fresh_database(name: str) -> None:
    for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", sql], check=True)


def wait(predicate, timeout, what):
    """The monotonic time at which predicate() first held; TimeoutError(what) after timeout s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(what)


def percentile(values, fraction: float) -> float:
    from vm_up import Samples  # bench/ is on sys.path: the same interpolation as vm_up.py

    return Samples("", list(values)).percentile(fraction)


class LabUnavailable(Exception):
    """The lab (or a part of it) cannot be built on this machine: the script says why and exits 2."""


class BenchControlPlane:
    def __init__(self, name: str, *, n_hosts: int = 0, database_suffix: str | None = None):
        """n_hosts: lab hypervisors to build (0: none, e.g. for recording hosts or the API alone)."""
        self.name = name
        self.n_hosts = n_hosts
        self.database = database_name(database_suffix or name)
        self.queue = f"uncloud-bench-{uuid.uuid4().hex[:8]}"
        self.workdir: Path | None = None
        self.lab = None
        self.env: dict = {}
        self.processes: list[subprocess.Popen] = []
        self._exits: list = []

    def __enter__(self):
        if self.n_hosts:
            from tests.lab import Lab, lab_unavailable_reason

            reason = lab_unavailable_reason()
            if reason:
                raise LabUnavailable(reason)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"uc-bench-{self.name}-"))
        try:
            if self.n_hosts:
                self.lab = Lab(self.workdir, n_hosts=self.n_hosts).up()
        except BaseException:
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        return self

    def configure(self, **settings) -> dict:
        """The environment every process of the run shares (the lab's key, TCG, the private queue,
        plus `settings`), a fresh database, Django set up and migrated. Returns the environment."""
        self.env = {
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{self.database}",
            "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
            "CELERY_TASK_DEFAULT_QUEUE": self.queue,
            "UNCLOUD_DATA_DIR": str(self.workdir / "data"),
            "UNCLOUD_VM_ACCEL": "tcg",
            "UNCLOUD_VM_STOP_TIMEOUT": "5",
            "ALLOWED_HOSTS": "testserver,localhost",
            "LOG_LEVEL": "WARNING",
        }
        if self.lab is not None:
            self.env["UNCLOUD_SSH_KEY_FILE"] = str(self.lab.hosts[0].client_key_path)
        self.env.update({key: str(value) for key, value in settings.items()})
        os.environ.update(self.env)
        os.environ["DJANGO_SETTINGS_MODULE"] = "uncloud_project.settings"
        fresh_database(self.database)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        return self.env

    def _spawn(self, kind: str, argv: list[str], settings: dict | None = None) -> subprocess.Popen:
        log = open(self.workdir / f"{kind}-{len(self.processes)}.log", "w")
        env = {**os.environ, **self.env, **{key: str(value) for key, value in (settings or {}).items()}}
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.processes.append(process)
        return process

    def worker(self, concurrency: int = 4, *extra: str, **settings) -> subprocess.Popen:
        """settings: this worker's own UNCLOUD_* values on top of the run's."""
        return self._spawn("worker", [*CELERY, "worker", "-Q", self.queue, f"--concurrency={concurrency}",
                                      "--loglevel=WARNING", "--without-gossip", "--without-mingle",
                                      "--without-heartbeat", *extra], settings)

    def beat(self) -> subprocess.Popen:
        return self._spawn("beat", [*CELERY, "beat", "--loglevel=WARNING", "-s", str(self.workdir / "beat-schedule")])

    def watcher(self) -> subprocess.Popen:
        return self._spawn("watcher", [sys.executable, "manage.py", "watch_hosts", "--loglevel=WARNING"])

    def stop(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(timeout=10)

    def on_exit(self, callback) -> None:
        self._exits.append(callback)

    def __exit__(self, *exc_info):
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            self.stop(process)
        if self.env:  # Django was set up: its SSH streams and pooled connections
            from agents.hostagent import close_streams
            from agents.transport import close_all

            close_streams()
            close_all()
        for callback in reversed(self._exits):
            callback()
        if self.lab is not None:
            self.lab.down()
        shutil.rmtree(self.workdir, ignore_errors=True)  # the hosts' disks and logs: tens of MB a run
        return False


def bench_customer(prefix: str = "bench", **quota):
    """A customer whose project may hold what a benchmark creates. Returns (user, project)."""
    from accounts.actions import do_create_user, do_set_quota
    from accounts.models import Project

    user = do_create_user(f"{prefix}-{uuid.uuid4().hex[:6]}", None)
    project = Project.objects.get(owner=user)
    limits = {"quota_vms": 1000, "quota_cores": 1000, "quota_memory_mib": 10**7, "quota_disk_mib": 10**8, **quota}
    do_set_quota(None, project, **limits)
    return user, project


def api_client(user):
    """An API client with a bearer token of `user` (in-process: Django's test client, no HTTP server)."""
    from rest_framework.test import APIClient

    from accounts.actions import do_create_token

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {do_create_token(user, 'bench')[1]}")
    return api


def run_in_threads(count: int, threads: int, make_client, work) -> float:
    """work(client, index) for every index below count, from `threads` threads at once, each with
    its own client (make_client()) and database connection. The seconds it all took."""
    from django.db import connections

    indexes = iter(range(count))
    lock = threading.Lock()
    errors = []

    def worker():
        client = make_client()
        try:
            while True:
                with lock:
                    index = next(indexes, None)
                if index is None:
                    return
                work(client, index)
        except Exception as error:  # re-raised below, in the caller's thread
            errors.append(error)
        finally:
            connections.close_all()

    started = time.perf_counter()
    running = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started
