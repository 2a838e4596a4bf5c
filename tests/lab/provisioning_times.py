"""Published provisioning times: the lab tests' own operations, measured where they ran.

After each test that used the database, the terminal operations it made (create, start, stop,
delete, migrate, ...) are read before the test's database is emptied; at the end of the run the
terminal summary prints, per kind, how many there were and the p50/p95/max from request to terminal
state (`vm.create`: create to running). CI's log keeps these figures; they are measured, never
asserted (timings under TCG on shared machines vary too much for a threshold).
"""

import math
from collections import defaultdict

import pytest

_durations: dict[tuple[str, str], list[float]] = defaultdict(list)
_DATABASE_FIXTURES = {"db", "transactional_db", "django_db_setup"}


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (the value at least `fraction` of the values are not above)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def record_operations() -> None:
    from agents.models import Operation

    for kind, state, created, finished in Operation.objects.filter(finished__isnull=False).values_list(
            "kind", "state", "created", "finished"):
        _durations[(kind, state)].append((finished - created).total_seconds())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    # Before the fixtures are torn down: the test's database still holds its operations.
    if item.get_closest_marker("lab") and _DATABASE_FIXTURES & set(getattr(item, "fixturenames", ())):
        try:
            record_operations()
        except Exception as error:  # a figure must never fail a test
            item.config.stash.setdefault(_errors_key, []).append(f"{item.nodeid}: {error}")
    yield


_errors_key = pytest.StashKey[list]()


def summary_lines() -> list[str]:
    lines = []
    for (kind, state), values in sorted(_durations.items()):
        lines.append(f"  {kind:<24} {state:<10} n={len(values):<4} p50={percentile(values, 0.5):7.1f} s  "
                     f"p95={percentile(values, 0.95):7.1f} s  max={max(values):7.1f} s")
    return lines


def pytest_terminal_summary(terminalreporter, config):
    lines = summary_lines()
    if not lines:
        return
    terminalreporter.section("provisioning times measured in the lab tests (request to terminal state)")
    for line in lines:
        terminalreporter.write_line(line)
    for error in config.stash.get(_errors_key, []):
        terminalreporter.write_line(f"  not recorded: {error}")
