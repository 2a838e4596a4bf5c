"""SSH transport and host agent against real sshd's in the lab's network namespaces."""

import json

import pytest

from agents.hostagent import HostAgent, HostError, close_streams, hostside_program
from agents.transport import (
    HostConnection,
    HostKeyMismatch,
    LocalTransport,
    SSHTransport,
    TransportError,
    fetch_host_key,
)

pytestmark = pytest.mark.lab

OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1L0f0dB4JqZ1nlMHVzrb6R2q1zwI0iNQ7DP9BYbJt"


def connection_to(host, **overrides) -> HostConnection:
    fields = dict(name=host.name, address=host.ssh_address, port=host.ssh_port, user=host.ssh_user,
                  host_key=host.host_key, key_file=str(host.client_key_path), connect_timeout=5, command_timeout=30)
    fields.update(overrides)
    return HostConnection(**fields)


def test_commands_run_inside_the_host_over_one_connection(lab):
    host = lab.hosts[0]
    transport = SSHTransport(connection_to(host))
    try:
        links = transport.run(["ip", "-o", "link"])
        assert links.exit_status == 0 and host.underlay_device in links.stdout
        first_connection = transport._client.get_transport()
        assert transport.run(["true"]).exit_status == 0
        assert transport._client.get_transport() is first_connection  # reused, not reconnected
        failed = transport.run(["ls", "/nonexistent-path"])
        assert failed.exit_status != 0 and "nonexistent-path" in failed.stderr
        assert transport.run(["cat"], input="through stdin").stdout == "through stdin"
    finally:
        transport.close()


def test_output_written_after_the_command_exits_is_not_lost(lab):
    # The exit status can cross before the output does (CI once saw only the first line of
    # `ip -o link`): a child that still holds stdout makes it certain.
    transport = SSHTransport(connection_to(lab.hosts[0]))
    try:
        result = transport.run(["sh", "-c", "printf first; (sleep 0.5; printf ' last'; printf ' err' >&2) & exit 3"])
    finally:
        transport.close()
    assert (result.exit_status, result.stdout, result.stderr) == (3, "first last", " err")


@pytest.mark.parametrize("transport_kind", ["ssh", "local"])
def test_arguments_are_never_shell_syntax(lab, tmp_path, transport_kind):
    canary = tmp_path / "injected"
    hostile = [f"; touch {canary}", f"$(touch {canary})", f"`touch {canary}`", f"a' ; touch {canary}; '",
               f'" && touch {canary} && "', f"line\ntouch {canary}", "*", "~root", "$HOME", "-n"]
    connection = connection_to(lab.hosts[0], transport=transport_kind)
    transport = SSHTransport(connection) if transport_kind == "ssh" else LocalTransport(connection)
    try:
        result = transport.run(["printf", "%s\\0", *hostile])
    finally:
        transport.close()
    assert result.stdout.split("\0")[:-1] == hostile
    assert not canary.exists()


def test_a_changed_host_key_is_refused(lab):
    transport = SSHTransport(connection_to(lab.hosts[0], host_key=OTHER_KEY))
    with pytest.raises(HostKeyMismatch) as error:
        transport.run(["true"])
    assert "not the pinned one" in str(error.value)
    assert error.value.transient is False


def test_a_host_without_pinned_key_is_refused(lab):
    with pytest.raises(HostKeyMismatch):
        SSHTransport(connection_to(lab.hosts[0], host_key="")).run(["true"])


def test_fetched_host_key_is_the_one_the_lab_pinned(lab):
    host = lab.hosts[1]
    assert fetch_host_key(host.ssh_address, host.ssh_port).split()[:2] == host.host_key.split()[:2]


def test_command_timeout(lab):
    transport = SSHTransport(connection_to(lab.hosts[0]))
    try:
        with pytest.raises(TransportError) as error:
            transport.run(["sleep", "5"], timeout=0.5)
        assert "did not finish" in str(error.value) and error.value.transient
        assert transport.run(["true"]).exit_status == 0  # the connection is still usable
    finally:
        transport.close()


def test_unreachable_host_then_back(lab):
    host = lab.hosts[1]
    transport = SSHTransport(connection_to(host))
    try:
        assert transport.run(["true"]).exit_status == 0
        host.stop_sshd()
        with pytest.raises(TransportError) as error:
            transport.run(["true"])
        assert error.value.transient
        host.start_sshd()
        assert transport.run(["true"]).exit_status == 0  # reconnects by itself
    finally:
        host.start_sshd() if not _sshd_up(host) else None
        transport.close()


def _sshd_up(host) -> bool:
    try:
        fetch_host_key(host.ssh_address, host.ssh_port, timeout=2)
        return True
    except TransportError:
        return False


def test_agent_ships_the_host_side_program_and_calls_it(lab):
    host = lab.hosts[0]
    agent = HostAgent(connection_to(host), str(host.state_dir))
    try:
        info = agent.call("host-info")
        _, checksum = hostside_program()
        assert info["sha256"] == checksum
        assert info["state_dir"] == str(host.state_dir)
        shipped = agent._program_path()
        assert shipped.startswith(f"{host.state_dir}/bin/") and checksum[:16] in shipped
        # Later agents for the same host trust the shipped copy without another checksum round trip.
        fresh = HostAgent(connection_to(host), str(host.state_dir))
        checks = []
        original_run = fresh.transport.run
        fresh.transport.run = lambda argv, **kw: checks.append(argv[0]) or original_run(argv, **kw)
        try:
            assert fresh.call("host-info")["sha256"] == checksum
        finally:
            del fresh.transport.run
        assert "sha256sum" not in checks
        # A tampered copy answers nonsense once (from a newly started serve process); the next
        # call verifies, replaces it and works.
        agent.transport.run(["sh", "-c", 'echo "print(1)" > "$1"', "sh", shipped])
        close_streams()
        with pytest.raises(HostError) as error:
            fresh.call("host-info")
        assert error.value.code == "bad_answer"
        assert fresh.call("host-info")["sha256"] == checksum
        # A removed copy is noticed when a serve process cannot start, shipped again, and the
        # call goes through.
        agent.transport.run(["rm", "-f", shipped])
        close_streams()
        assert fresh.call("host-info")["sha256"] == checksum
        assert agent.transport.run(["test", "-f", shipped]).exit_status == 0
        with pytest.raises(HostError) as error:
            fresh.call("vm-status", {"uuid": "not-a-uuid; reboot"})
        assert error.value.code == "bad_spec"
    finally:
        close_streams()
        agent.transport.close()


def test_calls_reuse_one_serve_process_and_survive_a_dropped_connection(lab):
    host = lab.hosts[0]
    agent = HostAgent(connection_to(host), str(host.state_dir))
    try:
        first = agent.call("host-info")
        pids = {agent.call("host-info")["pid"] for _ in range(3)}
        assert pids == {first["pid"]}  # one long-lived process answered every call
        agent.transport.close()  # the SSH connection drops; the pooled serve process is gone
        assert agent.call("host-info")["pid"] != first["pid"]
        # A broken request line gets an error answer and the same process keeps serving.
        stream = agent._take_stream()
        try:
            answer = json.loads(stream.request(b'{"verb": "host-info"}\n', timeout=10))
            assert answer["ok"] is False and answer["error"]["code"] == "bad_spec"
            answer = json.loads(stream.request(b"not json\n", timeout=10))
            assert answer["error"]["code"] == "bad_spec"
            answer = json.loads(stream.request(b'{"verb": "serve", "spec": {}}\n', timeout=10))
            assert answer["error"]["code"] == "bad_spec"
        finally:
            stream.close()
    finally:
        close_streams()
        agent.transport.close()


def test_a_connect_to_a_black_holed_host_stops_when_told_to_give_up(lab):
    """A host that drops our SYNs would hold the caller for the whole connect timeout; the caller's
    give_up() (the host went silent to the heartbeat watcher) is asked between one-second tries."""
    from tests.lab.failures import cut_from_control_plane, heal

    host = lab.hosts[1]
    transport = SSHTransport(connection_to(host, connect_timeout=600))
    asked = []

    def give_up():
        asked.append(1)
        return "the host went silent" if len(asked) >= 2 else None

    cut_from_control_plane(host)
    try:
        with pytest.raises(TransportError, match="gave up connecting: the host went silent") as error:
            transport.run(["true"], give_up=give_up)
        assert error.value.transient and len(asked) == 2
    finally:
        heal(host)
        transport.close()
    assert transport.run(["true"], give_up=give_up).exit_status == 0  # a host that answers is not given up
