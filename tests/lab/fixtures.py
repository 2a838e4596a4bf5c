"""pytest fixtures for real test hypervisors: `lab` (session, 2 hosts) and `lab_factory`.

Load with `pytest_plugins = ["tests.lab.fixtures"]` in the root conftest, or `-p tests.lab.fixtures`.
"""
import sys

import pytest

from .hosts import Lab, cleanup_stale, lab_unavailable_reason

_skip_reasons: set[str] = set()


def pytest_configure(config):
    config.addinivalue_line("markers", "lab: uses real test hypervisors built in network namespaces")


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
