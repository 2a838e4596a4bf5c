"""A late call from a worker that lost its operation is refused by the host (ha.refuse_stale_holder),
through the real `serve` loop; no root needed (`batch` of no calls changes nothing)."""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HOSTSIDE_DIR = Path(__file__).resolve().parents[1]
TARGET = "7b000000-0000-4000-8000-000000000001"
OTHER = "7b000000-0000-4000-8000-000000000002"


def serve(state_dir, *requests):
    lines = "".join(json.dumps(request) + "\n" for request in requests)
    completed = subprocess.run([sys.executable, "-m", "uncloud_hostside", "serve"], input=lines,
                               capture_output=True, text=True, cwd=HOSTSIDE_DIR, timeout=60, check=True)
    return [json.loads(line) for line in completed.stdout.splitlines()]


def call(state_dir, holder=None):
    request = {"verb": "batch", "spec": {"state_dir": str(state_dir), "calls": []}}
    return {**request, "holder": holder} if holder else request


@pytest.fixture
def state_dir():
    """A state dir the program takes (pytest's state_dir has underscores, which state_dir refuses)."""
    path = Path(tempfile.mkdtemp(prefix="uc-holder-"))
    yield path
    shutil.rmtree(path)


def test_a_step_older_than_one_the_host_heard_of_is_refused(state_dir):
    answers = serve(
        state_dir,
        call(state_dir, {"target": TARGET, "token": 2000}),  # the worker that took the operation over
        call(state_dir, {"target": TARGET, "token": 1000}),  # the one that lost it, arriving late
        call(state_dir, {"target": TARGET, "token": 2000}),  # the same step again (a retried call)
        call(state_dir, {"target": OTHER, "token": 1000}),  # another target has its own claims
        call(state_dir),  # calls outside an operation (reconciler, watcher) carry none
    )
    assert [answer["ok"] for answer in answers] == [True, False, True, True, True]
    assert answers[1]["error"]["code"] == "stale_holder"
    assert "lost the operation" in answers[1]["error"]["message"]
    assert (state_dir / "ha" / "holders" / TARGET).read_text() == "2000\n"


def test_a_holder_is_checked_like_any_spec(state_dir):
    bad = [{"target": "not-a-uuid", "token": 1}, {"target": TARGET, "token": -1}, {"target": TARGET},
           {"target": TARGET, "token": 1, "extra": 1}, "text"]
    answers = serve(state_dir, *(call(state_dir, holder) for holder in bad),
                    {"verb": "batch", "spec": {"calls": []}, "holder": {"target": TARGET, "token": 1}})
    assert [answer["error"]["code"] for answer in answers] == ["bad_spec"] * (len(bad) + 1)
