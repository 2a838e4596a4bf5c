"""A worker keeps its PostgreSQL connection from task to task, and survives losing it."""

import shutil
import tempfile

import pytest
from django.db import connection

from agents.choices import HostTransport
from agents.hosts import do_check_host
from agents.models import Host
from tests.lab.waiting import wait_for


def other_backends() -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return {pid for (pid,) in cursor.fetchall()}


def check_and_wait(host, processes):
    operation = do_check_host(None, host)

    def finished():
        operation.refresh_from_db()
        return operation.state in ("succeeded", "failed")

    wait_for(finished, log_paths=processes.logs)
    assert operation.state == "succeeded", operation.error


@pytest.mark.worker
def test_the_worker_reuses_its_connection_and_reconnects_when_it_is_gone(celery_processes):
    processes = celery_processes()
    processes.worker()
    state_dir = tempfile.mkdtemp(prefix="uc-", dir="/tmp")
    try:
        host = Host.objects.create(name="local", transport=HostTransport.LOCAL, state_dir=state_dir)
        check_and_wait(host, processes)
        after_first = other_backends()
        check_and_wait(host, processes)
        # The same backend served the second task: no new connection (and PostgreSQL process) per task.
        assert after_first and after_first <= other_backends()

        # PostgreSQL drops the worker's connections (a restart, an admin): the next task reconnects.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        wait_for(lambda: not (other_backends() & after_first), timeout=10)
        check_and_wait(host, processes)
    finally:
        shutil.rmtree(state_dir)
