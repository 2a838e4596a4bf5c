"""pytest fixtures for real test hypervisors: `lab` (session, 2 hosts) and `lab_factory`.

Load with `pytest_plugins = ["tests.lab.fixtures"]` in the root conftest, or `-p tests.lab.fixtures`.

Every test that uses a lab (namespaces, qemu, Ceph) is marked `lab`, so `-m "not lab"` runs the
fast rest. With UNCLOUD_REQUIRE_LAB=1 (CI sets it in .ci/run) a skipped test is a failure: a lab
that cannot be built must not pass as green.
"""
import os
import sys

import pytest

from .hosts import Lab, cleanup_stale, lab_unavailable_reason

_skip_reasons: set[str] = set()

# Fixtures that build or use real test hypervisors; a test that needs one of them is a lab test.
LAB_FIXTURES = {"_lab_cleaned_up", "ceph_cluster", "hosts", "lone_host"}


def lab_required() -> bool:
    return os.environ.get("UNCLOUD_REQUIRE_LAB", "").strip().lower() in ("1", "true", "yes", "on")


def pytest_configure(config):
    config.addinivalue_line("markers", "lab: uses real test hypervisors built in network namespaces")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if LAB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lab)


def _refuse_skip(report):
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"UNCLOUD_REQUIRE_LAB=1 allows no skip: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and lab_required() and not hasattr(report, "wasxfail"):
        _refuse_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and lab_required():
        _refuse_skip(report)


def pytest_terminal_summary(terminalreporter):
    # Output printed during a fixture is captured and hidden for skipped tests: say it again here.
    for reason in sorted(_skip_reasons):
        terminalreporter.write_line(f"tests.lab: lab tests SKIPPED: {reason}", yellow=True, bold=True)


def _skip_unless_lab_available():
    reason = lab_unavailable_reason()
    if reason:
        _skip_reasons.add(reason)
        print(f"tests.lab: lab tests skipped: {reason}", file=sys.stderr)
        pytest.skip(f"lab unavailable: {reason}")


@pytest.fixture(scope="session")
def _lab_cleaned_up():
    """Leftovers of crashed runs go once per session, before the first lab is built."""
    _skip_unless_lab_available()
    removed = cleanup_stale()
    if removed:
        print(f"tests.lab: removed stale lab leftovers: {removed}", file=sys.stderr)


@pytest.fixture(scope="session")
def lab(_lab_cleaned_up, tmp_path_factory):
    with Lab(tmp_path_factory.mktemp("lab"), n_hosts=2) as session_lab:
        yield session_lab


@pytest.fixture
def lab_factory(_lab_cleaned_up, tmp_path_factory):
    """`lab_factory(n_hosts=3)` builds another lab; all of them are torn down after the test."""
    labs = []

    def make_lab(n_hosts: int = 2) -> Lab:
        new_lab = Lab(tmp_path_factory.mktemp("lab"), n_hosts=n_hosts)
        labs.append(new_lab)
        return new_lab.up()

    yield make_lab
    for made in reversed(labs):
        made.down()
