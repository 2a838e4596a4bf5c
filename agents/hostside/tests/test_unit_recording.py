"""A recording host (recording.py) answers verbs and logs them, running nothing; a host without the
marker file runs its verbs for real. No root: the `commands` table fails any command that runs."""
import json
import shutil
import tempfile
from pathlib import Path

import pytest

from agents.hostside.uncloud_hostside import paths
from agents.hostside.uncloud_hostside.dispatch import run_verb
from agents.hostside.uncloud_hostside.errors import HostsideError

VM = "6f1c2d3e-0000-4000-8000-000000000001"
DISK = "6f1c2d3e-0000-4000-8000-0000000000d1"


@pytest.fixture
def recording_host(commands):
    state_dir = tempfile.mkdtemp(prefix="ucrec-", dir="/tmp")  # pytest's tmp_path is longer than a state_dir may be
    Path(paths.recording_paths(state_dir)["marker"]).write_text("")
    yield state_dir
    shutil.rmtree(state_dir)


def recorded_verbs(state_dir):
    log = Path(paths.recording_paths(state_dir)["log"])
    return [json.loads(line)["verb"] for line in log.read_text().splitlines()]


def test_a_create_and_a_delete_are_recorded_and_answered_like_a_host_that_ran_them(recording_host, commands):
    disks = run_verb("batch", {"state_dir": recording_host, "calls": [
        {"verb": "disk-ensure", "spec": {"disk_uuid": DISK, "size_mib": 1024}},
        {"verb": "vm-metadata", "spec": {"uuid": VM}}]})["results"]
    assert disks[0]["path"] == paths.disk_path(recording_host, DISK)
    assert disks[1]["config_drive"] == paths.vm_metadata_paths(recording_host, VM)["drive"]
    booted = run_verb("vm-up", {"state_dir": recording_host, "uuid": VM, "name": "web1"})
    assert booted["status"] == "running"
    assert run_verb("vm-status", {"state_dir": recording_host, "uuid": VM})["status"] == "running"
    assert [vm["uuid"] for vm in run_verb("inventory", {"state_dir": recording_host})["vms"]] == [VM]
    run_verb("vm-down", {"state_dir": recording_host, "uuid": VM, "hard": True})
    assert run_verb("inventory", {"state_dir": recording_host})["vms"] == []
    assert recorded_verbs(recording_host) == ["disk-ensure", "vm-metadata", "vm-up", "vm-status", "inventory",
                                              "vm-down", "inventory"]
    assert commands.ran == []  # nothing ran: no qemu-img, no ip, no qemu
    assert not Path(paths.disk_path(recording_host, DISK)).exists()


def test_without_the_marker_verbs_run_for_real(tmp_path, commands):
    with pytest.raises(HostsideError) as error:
        run_verb("vm-up", {"state_dir": str(tmp_path), "uuid": VM})  # a real vm-up checks its spec
    assert error.value.code == "bad_spec"
    assert not Path(paths.recording_paths(str(tmp_path))["log"]).exists()


def test_a_marker_can_make_a_slow_host(recording_host):
    from agents.hostside.uncloud_hostside.recording import delay_of_each_verb

    assert delay_of_each_verb(recording_host) == 0
    Path(paths.recording_paths(recording_host)["marker"]).write_text('{"verb_delay_s": 0.25}')
    assert delay_of_each_verb(recording_host) == 0.25
