"""The host exporter's answer, without root: stand-in qemu processes answering QMP (tests/lab/fake_qmp.py),
ports named after the loopback interface so /proc/net/dev has counters for them, and the nft guard
counters parsed from `nft -j` output as the kernel prints it."""

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.hostside.uncloud_hostside import exporter
from tests.lab.fake_qmp import READ_BYTES, WRITTEN_BYTES, start_fake_guests, stop, write_port


@pytest.fixture
def fake_guests():
    # A short state_dir: <state_dir>/vms/<uuid>/qmp.sock must fit in a unix socket address.
    state_dir = Path(tempfile.mkdtemp(prefix="ucx-", dir="/tmp"))
    vms = [str(uuid.uuid4()) for _ in range(3)]
    process = start_fake_guests(state_dir, vms)
    yield state_dir, vms
    stop(process)
    shutil.rmtree(state_dir)


def families(text):
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_every_guest_has_cpu_memory_disk_and_network(fake_guests, monkeypatch):
    state_dir, vms = fake_guests
    # The loopback interface exists in every namespace: a port named after it has real counters.
    write_port(state_dir, vms[0], "lo")
    write_port(state_dir, "not-running", "lo2")
    monkeypatch.setattr(exporter, "read_guard_counters", lambda: {("lo", "spoofed-mac"): (7, 420)})
    found = families(exporter.collect(str(state_dir)))
    cpu = {sample.labels["vm"] for sample in found["uncloud_vm_cpu_seconds"].samples}
    assert cpu == set(vms)
    reads = {sample.labels["vm"]: sample.value for sample in found["uncloud_vm_disk_read_bytes"].samples}
    assert reads == dict.fromkeys(vms, READ_BYTES)
    assert {sample.labels["device"] for sample in found["uncloud_vm_disk_write_bytes"].samples} == {
        "/machine/peripheral/disk0"}
    assert all(sample.value == WRITTEN_BYTES for sample in found["uncloud_vm_disk_write_bytes"].samples)
    (received,) = found["uncloud_vm_network_receive_bytes"].samples
    assert received.labels == {"vm": vms[0], "tap": "lo", "mac": "02:00:00:00:00:01"}
    (drops,) = found["uncloud_vm_guard_dropped_packets"].samples
    assert drops.labels["reason"] == "spoofed-mac" and drops.value == 7
    assert found["uncloud_host_vms_running"].samples[0].value == 3
    assert found["uncloud_host_memory_total_bytes"].samples[0].value > 0
    assert {sample.labels["period"] for sample in found["uncloud_host_load"].samples} == {"1m", "5m", "15m"}


def test_a_guest_whose_qmp_does_not_answer_is_reported_not_fatal(fake_guests):
    state_dir, vms = fake_guests
    (state_dir / "vms" / vms[1] / "qmp.sock").unlink()
    found = families(exporter.collect(str(state_dir)))
    assert [sample.labels["vm"] for sample in found["uncloud_vm_qmp_errors"].samples] == [vms[1]]
    assert {sample.labels["vm"] for sample in found["uncloud_vm_cpu_seconds"].samples} == set(vms)


def test_a_stopped_guest_and_a_stranger_pid_are_left_out(tmp_path):
    vm = str(uuid.uuid4())
    (tmp_path / "vms" / vm).mkdir(parents=True)
    (tmp_path / "vms" / vm / "qemu.pid").write_text("1")  # pid 1 does not name this VM's socket
    assert exporter.running_guests(str(tmp_path)) == {}


def test_guard_counters_are_read_from_nft_json():
    nft_json = {"nftables": [
        {"metainfo": {"json_schema_version": 1}},
        {"rule": {"family": "bridge", "table": "uncloud", "chain": "guard_tap1a2b", "comment": "spoofed-mac",
                  "expr": [{"match": {}}, {"counter": {"packets": 3, "bytes": 180}}, {"drop": None}]}},
        {"rule": {"family": "bridge", "table": "uncloud", "chain": "guard_tap1a2b", "comment": "spoofed-mac",
                  "expr": [{"counter": {"packets": 1, "bytes": 60}}, {"drop": None}]}},
        {"rule": {"family": "bridge", "table": "uncloud", "chain": "multicast_tap1a2b",
                  "comment": "security-group-multicast", "expr": [{"counter": {"packets": 2, "bytes": 9}}]}},
        {"rule": {"family": "bridge", "table": "uncloud", "chain": "guest_ports_forward",
                  "expr": [{"counter": {"packets": 99, "bytes": 99}}]}},
    ]}
    assert exporter.guard_counters(nft_json) == {
        ("tap1a2b", "spoofed-mac"): (4, 240),
        ("tap1a2b", "multicast-security-group-multicast"): (2, 9),
    }


def test_interface_counters_parse_proc_net_dev(tmp_path):
    dev = tmp_path / "dev"
    dev.write_text(
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls "
        "carrier compressed\n"
        "tap0: 1000 10 0 2 0 0 0 0 5000 50 0 3 0 0 0 0\n")
    assert exporter.interface_counters(str(dev)) == {"tap0": {
        "rx_bytes": 1000, "rx_packets": 10, "rx_drop": 2, "tx_bytes": 5000, "tx_packets": 50, "tx_drop": 3}}


def test_exporter_up_refuses_a_bad_listen_address(tmp_path):
    from agents.hostside.uncloud_hostside.errors import HostsideError

    for listen in ("0.0.0.0", "example.org", "fd00::1; rm -rf /"):
        with pytest.raises(HostsideError):
            exporter.verb_exporter_up({"state_dir": str(tmp_path), "listen": listen, "port": 9847})


def _free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_daemon_answers_only_the_token_and_only_metrics(tmp_path):
    import json
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    from agents.hostside.uncloud_hostside.exporter import exporter_paths

    port = _free_port()
    paths = exporter_paths(str(tmp_path))
    Path(paths["dir"]).mkdir()
    Path(paths["spec"]).write_text(json.dumps({"listen": "127.0.0.1", "port": port, "token": "s3cret"}))
    # The daemon as exporter-up starts it, from the source tree instead of the shipped archive.
    daemon = subprocess.Popen([sys.executable, "-c", "import sys; from agents.hostside.uncloud_hostside.exporter "
                               "import serve_exporter; sys.exit(serve_exporter(sys.argv[1]))", str(tmp_path)])
    try:
        deadline = time.monotonic() + 10
        while not Path(paths["pid"]).exists() and time.monotonic() < deadline:
            time.sleep(0.02)

        def get(path, token=None):
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
            if token:
                request.add_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as error:
                return error.code, ""

        assert get("/metrics")[0] == 401
        assert get("/metrics", "wrong")[0] == 401
        status, body = get("/metrics", "s3cret")
        assert status == 200 and "uncloud_host_memory_total_bytes" in body
        assert get("/other", "s3cret")[0] == 404
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
    assert daemon.returncode == 0


def test_exporter_up_refuses_a_token_that_is_not_a_plain_word(tmp_path):
    from agents.hostside.uncloud_hostside.errors import HostsideError

    for token in ("two words", "new\nline", 42, "x" * 513):
        with pytest.raises(HostsideError):
            exporter.verb_exporter_up({"state_dir": str(tmp_path), "listen": "127.0.0.1", "port": 9847,
                                       "token": token})


def test_guard_counters_are_refreshed_in_the_background_only_when_asked_and_stale(monkeypatch):
    import threading

    readings = []
    released = threading.Event()

    def read():
        readings.append(len(readings))
        if len(readings) > 1:
            released.wait(5)  # a slow nft: the scrape must not wait for it
        return {("tap", "spoofed-mac"): (len(readings), 0)}

    monkeypatch.setattr(exporter, "read_guard_counters", read)
    reader = exporter.GuardCounterReader(interval_s=0.05).start()
    assert reader.latest()[0] == {("tap", "spoofed-mac"): (1, 0)} and len(readings) == 1  # fresh: no read
    import time

    time.sleep(0.1)
    assert reader.latest()[0] == {("tap", "spoofed-mac"): (1, 0)}  # stale: the old reading, at once
    assert reader.latest()[0] == {("tap", "spoofed-mac"): (1, 0)}  # one refresh in flight, not two
    released.set()
    deadline = time.monotonic() + 5
    while reader.latest()[0] != {("tap", "spoofed-mac"): (2, 0)} and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reader.latest()[0] == {("tap", "spoofed-mac"): (2, 0)} and len(readings) == 2
