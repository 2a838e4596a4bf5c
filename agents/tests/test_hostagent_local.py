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
