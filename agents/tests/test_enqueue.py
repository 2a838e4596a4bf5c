"""The Operation engine hands work to Celery by task name: it never imports its own task module
(agents/tasks.py imports the engine), and an eager app still runs the task in place."""

import ast
from pathlib import Path

import pytest
from celery import current_app

from agents import operations


def test_the_engine_does_not_import_its_task_module():
    tree = ast.parse(Path(operations.__file__).read_text())
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "agents.tasks" not in modules


@pytest.mark.django_db
def test_enqueue_runs_the_named_task(monkeypatch):
    ran = []
    monkeypatch.setattr(operations, "claim", lambda operation_id: ran.append(operation_id))  # nothing to claim
    eager = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    try:
        operations.enqueue(424242)
    finally:
        current_app.conf.task_always_eager = eager
    assert ran == [424242]  # advance_operation ran (eagerly) and asked for the operation


FIRST_SENDS_AT_ONCE = """
import os, threading
import django
django.setup()
from agents import operations
failures, start = [], threading.Barrier(20)
def send(operation_id):
    start.wait()
    try:
        operations.enqueue(operation_id)
    except Exception as error:
        failures.append(repr(error))
threads = [threading.Thread(target=send, args=(index,)) for index in range(20)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(failures)
"""


def test_the_first_sends_from_many_threads_at_once_all_reach_the_broker():
    """The task registry fills on the first send: threads that send at the same moment wait for it
    (one of them once raised NotRegistered and its operation waited for the resumer). A fresh
    process each time, since the registry is filled once per process; Celery's in-memory broker."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "uncloud_project.settings",
                   "CELERY_BROKER_URL": "memory://"}
    for _ in range(5):
        done = subprocess.run([sys.executable, "-c", FIRST_SENDS_AT_ONCE], cwd=root, env=environment,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-2000:]
