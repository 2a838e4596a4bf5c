"""A real Celery worker process takes work through Redis and writes its results to PostgreSQL."""

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from django.db import connection

from agents.choices import HostTransport
from agents.hosts import do_check_host
from agents.models import Host, Operation
from tests.workers import database_url, wait_for
from uncloud_project.celery import app as celery_app

BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture
def worker(tmp_path, transactional_db):
    """A worker on a queue of its own (so nothing else's messages reach it), on the test database."""
    if connection.vendor != "postgresql" or not celery_app.conf.broker_url.startswith("redis://"):
        pytest.fail("worker tests run against PostgreSQL and Redis: use the README's test command")
    queue = f"uncloud-test-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, DATABASE_URL=database_url(), CELERY_TASK_DEFAULT_QUEUE=queue,
               UNCLOUD_DATA_DIR=str(tmp_path / "worker-data"))
    log = open(tmp_path / "worker.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "uncloud_project", "worker", "-Q", queue, "--concurrency=1",
         "--loglevel=INFO", "--without-gossip", "--without-mingle"],
        cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    old_queue = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = queue
    try:
        yield process
    finally:
        celery_app.conf.task_default_queue = old_queue
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.mark.worker
def test_worker_runs_host_check_through_redis_into_postgresql(worker, tmp_path):
    # unix socket paths are short (108 bytes): host state dirs live under a short path.
    state_dir = tempfile.mkdtemp(prefix="uc-", dir="/tmp")
    host = Host.objects.create(name="local", transport=HostTransport.LOCAL, state_dir=state_dir)
    operation = do_check_host(None, host)  # enqueues on commit: the worker gets it through Redis

    def finished():
        operation.refresh_from_db()
        return operation.state in ("succeeded", "failed")

    wait_for(finished, log_paths=[tmp_path / "worker.log"])
    assert operation.state == "succeeded", operation.error
    host.refresh_from_db()
    assert host.last_heartbeat is not None
    assert host.cores == os.cpu_count()
    assert host.facts["binaries"]["ip"]
    assert operation.result["host_info"]["state_dir"] == state_dir
    shutil.rmtree(state_dir)
    assert Operation.objects.get(pk=operation.pk).lease_owner == ""
