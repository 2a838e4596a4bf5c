"""The host agent on the local transport (the embedded default): one long-lived serve process."""

import shutil
import tempfile

from agents.hostagent import HostAgent, HostError, close_streams
from agents.transport import HostConnection


def test_local_calls_share_one_serve_process_and_errors_stay_structured():
    state_dir = tempfile.mkdtemp(prefix="uc-", dir="/tmp")  # unix socket paths below it must stay short
    agent = HostAgent(HostConnection(name="local", transport="local"), state_dir)
    try:
        first = agent.call("host-info")
        assert agent.call("host-info")["pid"] == first["pid"]
        try:
            agent.call("vm-status", {"uuid": "x; reboot"})
        except HostError as error:
            assert error.code == "bad_spec"
        else:
            raise AssertionError("a bad uuid was accepted")
        assert agent.call("host-info")["pid"] == first["pid"]  # an error answer keeps the process
        close_streams()
        assert agent.call("host-info")["pid"] != first["pid"]
    finally:
        close_streams()
        shutil.rmtree(state_dir)


def test_a_worker_process_warms_its_connections_to_the_hosts_it_will_call(db):
    # What celery.py's worker_process_init runs in a new worker process: afterwards each host that
    # may get work has an idle serve process, and the first real call takes it instead of starting one.
    from django.utils import timezone

    from agents.choices import HostLiveness, HostStatus
    from agents.hostagent import _idle_streams
    from agents.hosts import agent_for, warm_host_connections
    from agents.models import Host

    state_dirs = [tempfile.mkdtemp(prefix="uc-", dir="/tmp") for _ in range(4)]
    hosts = {}
    for name, status, liveness, state_dir in zip(
            ("ready", "draining", "silent", "maintenance"),
            (HostStatus.ENABLED, HostStatus.DRAINING, HostStatus.ENABLED, HostStatus.MAINTENANCE),
            (HostLiveness.ALIVE, HostLiveness.ALIVE, HostLiveness.SUSPECT, HostLiveness.ALIVE), state_dirs, strict=True):
        hosts[name] = Host.objects.create(name=name, transport="local", state_dir=state_dir, cores=4, memory_mib=4096,
                                          disk_gib=10, status=status, liveness=liveness, last_heartbeat=timezone.now())
    close_streams()
    try:
        assert warm_host_connections() == []

        def idle(host):
            agent = agent_for(host, even_if_silent=True)
            return len(_idle_streams.get((agent.connection, agent._program_path()), []))

        assert {name: idle(host) for name, host in hosts.items()} == {
            "ready": 1, "draining": 1, "silent": 0, "maintenance": 0}
        warm_host_connections()  # again (a second process start, a retry): nothing more is opened
        assert idle(hosts["ready"]) == 1
        agent_for(hosts["ready"]).call("host-info")
        assert idle(hosts["ready"]) == 1  # the call took the warm process and gave it back
    finally:
        close_streams()
        for state_dir in state_dirs:
            shutil.rmtree(state_dir)


def test_a_host_call_in_flight_carries_the_steps_claim_and_hands_back_its_error():
    # The disks step runs its host batch in a thread while it reads what boot will send
    # (images/hostwork.py): the call must still carry the step's claim, and fail the step as it failed.
    import uuid

    import pytest

    from agents.hostagent import _holder, acting_for
    from agents.hosts import HostCallInFlight

    target = uuid.uuid4()
    with acting_for(target, 42):
        seen = HostCallInFlight(lambda: _holder.get()).result()
    assert seen == {"target": str(target), "token": 42}
    assert HostCallInFlight(lambda: _holder.get()).result() is None  # outside a step: no claim

    def refused():
        raise HostError("stale_generation", "a newer start of this VM exists")

    with pytest.raises(HostError) as raised:
        HostCallInFlight(refused).result()
    assert raised.value.code == "stale_generation"


def test_a_host_row_read_before_a_call_is_not_trusted_to_say_the_host_is_heard(db):
    # The boot step may take its host row from the disks step, read before a call that waited out a
    # cut: the watcher may have called the host silent since, and then it must not be called.
    from django.utils import timezone

    from agents.hosts import agent_for
    from agents.models import Host

    host = Host.objects.create(name="hv-read-earlier", transport="local", state_dir="/tmp/hv-read-earlier", cores=4,
                               memory_mib=4096, disk_gib=10, liveness="alive", last_heartbeat=timezone.now())
    Host.objects.filter(pk=host.pk).update(liveness="partitioned", liveness_since=timezone.now())
    assert host.liveness == "alive"  # the row in hand, read before the watcher's word
    assert agent_for(host).give_up() is None  # read just now: trusted for the first question
    reason = agent_for(host, read_just_now=False).give_up()
    assert reason and "partitioned" in reason
