"""The heartbeat watcher's decisions across its own restart (agents/liveness.py), on the database
without hosts: the watcher is driven tick by tick with a clock of the test's (no heartbeat threads;
the lab test vms/tests/test_failover_lab.py runs the real process against real hosts)."""

from datetime import timedelta

from django.utils import timezone

from agents.choices import HostLiveness, HostTransport
from agents.liveness import POWER_STARTED, HostWatcher, fence_log_entry
from agents.models import Alarm, Host


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def failed_host(name, *, failed_s_ago, heard_s_ago, **fields) -> Host:
    now = timezone.now()
    return Host.objects.create(name=name, transport=HostTransport.LOCAL, liveness=HostLiveness.DEAD,
                               liveness_since=now - timedelta(seconds=failed_s_ago),
                               last_heartbeat=now - timedelta(seconds=heard_s_ago), **fields)


def restarted_watcher(clock, *hosts) -> HostWatcher:
    watcher = HostWatcher(clock=clock)
    for host in hosts:
        watcher.first_seen(host)
    return watcher


def evaluate(watcher, host) -> Host:
    watcher.evaluate([Host.objects.get(pk=host.pk)])
    return Host.objects.get(pk=host.pk)


def test_a_restarted_watcher_neither_revives_a_failed_host_nor_restarts_its_lease(db, settings):
    settings.UNCLOUD_FENCE_LEASE_SECONDS, settings.UNCLOUD_FENCE_MARGIN_SECONDS = 15, 5
    settings.UNCLOUD_HEARTBEAT_SUSPECT_AFTER_MS = 3000
    # Dead for 8 s, so silent for at least 11 s: the lease (15 + 5 s) runs out 9 s from now.
    host = failed_host("hv-dead", failed_s_ago=8, heard_s_ago=12)
    clock = Clock()
    watcher = restarted_watcher(clock, host)

    assert evaluate(watcher, host).liveness == HostLiveness.DEAD  # not "heard" before it answers
    clock.now += 8
    assert evaluate(watcher, host).liveness == HostLiveness.DEAD  # its lease has not run out yet
    clock.now += 2
    fenced = evaluate(watcher, host)
    assert fenced.liveness == HostLiveness.FENCED
    assert [entry["step"] for entry in fenced.fence_log] == ["lease"]


def test_a_restarted_watcher_never_runs_a_power_fence_twice(db, settings, tmp_path):
    runs = tmp_path / "power-runs"
    command = ["sh", "-c", f"echo off >> {runs}"]
    now = timezone.now()
    # The last watcher had started the power fence when it stopped: it is not run again.
    interrupted = failed_host("hv-interrupted", failed_s_ago=2, heard_s_ago=6, power_fence_command=command,
                              fence_log=[fence_log_entry(POWER_STARTED, True, "running the power fence command")])
    # An earlier failure's power fence (before this failure) does not count for this one.
    earlier = fence_log_entry("power", True, "exited 0")
    earlier["at"] = (now - timedelta(hours=1)).isoformat()
    fresh = failed_host("hv-fresh", failed_s_ago=2, heard_s_ago=6, power_fence_command=command, fence_log=[earlier])
    clock = Clock()
    watcher = restarted_watcher(clock, interrupted, fresh)

    assert evaluate(watcher, interrupted).liveness == HostLiveness.DEAD  # waits for its lease instead
    assert not runs.exists()
    fenced = evaluate(watcher, fresh)
    assert runs.read_text() == "off\n" and fenced.liveness == HostLiveness.FENCED
    assert [entry["step"] for entry in fenced.fence_log] == ["power", POWER_STARTED, "power"]

    again = restarted_watcher(Clock(), *Host.objects.filter(pk=fresh.pk))  # fenced: nothing left to do
    evaluate(again, fresh)
    assert runs.read_text() == "off\n"


def test_a_starting_watcher_calls_no_host_suspect_before_its_first_call_ends(db, settings):
    settings.UNCLOUD_HEARTBEAT_SUSPECT_AFTER_MS = 3000
    hosts = [Host.objects.create(name=f"hv{index}", transport=HostTransport.LOCAL, liveness=HostLiveness.ALIVE)
             for index in range(2)]
    clock = Clock()
    watcher = restarted_watcher(clock, *hosts)
    clock.now += 6  # the first calls are slow (SSH, a new serve process on a loaded host)
    watcher.evaluate(list(Host.objects.all()))
    assert set(Host.objects.values_list("liveness", flat=True)) == {HostLiveness.ALIVE}
    assert not Alarm.objects.exists()  # no mass failure either

    watcher.first_call_ended(hosts[0].id)  # missed: silent since the watcher started
    watcher._answered(hosts[1], {"guests": {}})
    watcher.first_call_ended(hosts[1].id)
    watcher.evaluate(list(Host.objects.all()))
    assert Host.objects.get(pk=hosts[0].pk).liveness != HostLiveness.ALIVE
    assert Host.objects.get(pk=hosts[1].pk).liveness == HostLiveness.ALIVE


def test_a_host_call_asks_the_database_about_silence_only_after_its_first_question(db, django_assert_num_queries):
    from agents.hosts import SilenceCheck

    host = Host.objects.create(name="hv-alive", transport=HostTransport.LOCAL, liveness=HostLiveness.ALIVE)
    check = SilenceCheck(host)
    with django_assert_num_queries(0):
        assert check() is None  # the row in hand was read by the step a moment ago
    Host.objects.filter(pk=host.pk).update(liveness=HostLiveness.SUSPECT, liveness_since=timezone.now())
    with django_assert_num_queries(1):
        assert "hv-alive is suspect" in check()  # the call in flight asks again: now it is told

    silent = Host.objects.create(name="hv-silent", transport=HostTransport.LOCAL, liveness=HostLiveness.DEAD)
    assert "hv-silent is dead" in SilenceCheck(silent)()  # a row in hand that says silent is never trusted alive
