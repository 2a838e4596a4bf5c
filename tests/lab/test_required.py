"""UNCLOUD_REQUIRE_LAB=1 turns skips into failures: a CI run where the lab cannot be built fails."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIPPING_TESTS = '''
import pytest

pytest_plugins = ["tests.lab.fixtures"]


@pytest.fixture
def missing_tool():
    pytest.skip("no such tool here")


def test_skips_in_a_fixture(missing_tool):
    pass


def test_skips_itself():
    pytest.skip("not today")


@pytest.mark.xfail(reason="known", strict=True)
def test_an_expected_failure_stays_one():
    raise AssertionError
'''


def run_pytest(directory, require):
    (directory / "test_skipping.py").write_text(SKIPPING_TESTS)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("UNCLOUD_REQUIRE_LAB", None)
    if require:
        env["UNCLOUD_REQUIRE_LAB"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:django",
                           "-q", str(directory)], cwd=directory, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("require", [False, True])
def test_skips_fail_only_when_the_lab_is_required(tmp_path, require):
    completed = run_pytest(tmp_path, require)
    if require:
        assert completed.returncode == 1, completed.stdout
        assert "1 failed, 1 xfailed, 1 error" in completed.stdout, completed.stdout
        assert "UNCLOUD_REQUIRE_LAB=1 allows no skip: Skipped: no such tool here" in completed.stdout
    else:
        assert completed.returncode == 0, completed.stdout
        assert "2 skipped, 1 xfailed" in completed.stdout, completed.stdout
