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
