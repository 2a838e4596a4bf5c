"""A real Celery worker process takes work through Redis and writes its results to PostgreSQL."""

import os
import shutil
import tempfile

import pytest

from agents.choices import HostTransport
from agents.hosts import do_check_host
from agents.models import Host, Operation
from tests.lab.waiting import wait_for


@pytest.mark.worker
def test_worker_runs_host_check_through_redis_into_postgresql(celery_processes):
    processes = celery_processes()
    processes.worker()
    # unix socket paths are short (108 bytes): host state dirs live under a short path.
    state_dir = tempfile.mkdtemp(prefix="uc-", dir="/tmp")
    host = Host.objects.create(name="local", transport=HostTransport.LOCAL, state_dir=state_dir)
    operation = do_check_host(None, host)  # enqueues on commit: the worker gets it through Redis

    def finished():
        operation.refresh_from_db()
        return operation.state in ("succeeded", "failed")

    wait_for(finished, log_paths=processes.logs)
    assert operation.state == "succeeded", operation.error
    host.refresh_from_db()
    assert host.last_heartbeat is not None
    assert host.cores == os.cpu_count()
    assert host.facts["binaries"]["ip"]
    assert operation.result["host_info"]["state_dir"] == state_dir
    shutil.rmtree(state_dir)
    assert Operation.objects.get(pk=operation.pk).lease_owner == ""
