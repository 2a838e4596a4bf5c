"""The lab itself: real hosts come up, are reachable over SSH, carry VXLAN, and go away cleanly."""
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .hosts import NAME_PREFIX, NETNS_DIR, REGISTRY_DIR, Lab, _process_alive, cleanup_stale, processes_in_netns

pytestmark = pytest.mark.lab

REPO_ROOT = Path(__file__).resolve().parents[2]


def ssh(host, argv, known_hosts=None):
    command = host.ssh_argv(argv)
    if known_hosts is not None:
        command = [part.replace(str(host.known_hosts_path), str(known_hosts)) for part in command]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def lab_leftovers(lab_id):
    namespaces = [n for n in os.listdir(NETNS_DIR) if n.startswith(f"{NAME_PREFIX}{lab_id}-")]
    links = [n for n in os.listdir("/sys/class/net") if n.startswith(f"{NAME_PREFIX}{lab_id}m")]
    registered = (REGISTRY_DIR / f"{lab_id}.json").exists()
    return namespaces, links, registered


def add_vxlan(host, vni, group, address):
    host.run(["ip", "-6", "link", "add", f"vxlan{vni}", "type", "vxlan", "id", str(vni), "dstport", "4789",
              "group", group, "dev", host.underlay_device, "ttl", "5"])
    host.run(["ip", "link", "add", f"br{vni}", "type", "bridge"])
    host.run(["ip", "link", "set", f"vxlan{vni}", "master", f"br{vni}", "up"])
    host.run(["ip", "link", "set", f"br{vni}", "up"])
    host.run(["ip", "-6", "addr", "add", f"{address}/64", "dev", f"br{vni}", "nodad"])


def test_hosts_come_up_each_in_its_own_namespace(lab):
    assert [host.name for host in lab.hosts] == ["hv1", "hv2"]
    assert len({host.netns for host in lab.hosts}) == 2
    assert len({host.ssh_address for host in lab.hosts}) == 2
    for host in lab.hosts:
        assert (NETNS_DIR / host.netns).exists()
        assert host.state_dir.is_dir()
        addresses = host.run(["ip", "-6", "-o", "addr", "show", "dev", host.underlay_device]).stdout
        assert f"{host.underlay_address}/64" in addresses
        assert host.host_key.startswith("ssh-ed25519 ")


def test_ssh_runs_commands_inside_the_host_namespace(lab):
    for host in lab.hosts:
        result = ssh(host, ["ip", "-o", "-6", "addr", "show"])
        assert result.returncode == 0, result.stderr
        # Only this host's namespace has this underlay address; the root namespace has no ul0.
        assert f"{host.underlay_device}    inet6 {host.underlay_address}/64" in result.stdout
        assert f"mgmt0    inet6 {host.ssh_address}/64" in result.stdout


def test_host_key_pinning_rejects_another_hosts_key(lab, tmp_path):
    first, second = lab.hosts
    wrong_known_hosts = tmp_path / "known_hosts"
    wrong_known_hosts.write_text(f"{first.ssh_address} {second.host_key}\n")
    result = ssh(first, ["true"], known_hosts=wrong_known_hosts)
    assert result.returncode != 0
    assert "host key" in result.stderr.lower()


def test_stop_and_start_sshd(lab):
    host = lab.hosts[1]
    try:
        host.stop_sshd()
        refused = ssh(host, ["true"])
        assert refused.returncode == 255
        assert "refused" in refused.stderr
    finally:
        host.start_sshd()
    assert ssh(host, ["true"]).returncode == 0


def test_vxlan_over_ipv6_multicast_carries_traffic_between_three_hosts(lab, lab_factory):
    # A second lab next to the session one: labs must not collide.
    three = lab_factory(3)
    assert not {h.netns for h in three.hosts} & {h.netns for h in lab.hosts}
    for index, host in enumerate(three.hosts, start=1):
        add_vxlan(host, 100, "ff05::64", f"fd00:100::{index}")
    for target in ("fd00:100::1", "fd00:100::2"):
        result = three.hosts[2].run(["ping", "-6", "-c", "1", "-W", "3", target], check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    # The traffic really went through the VXLAN: the far end learnt hv3's bridge MAC behind vxlan100.
    hv3_mac = json.loads(three.hosts[2].run(["ip", "-j", "link", "show", "br100"]).stdout)[0]["address"]
    fdb = three.hosts[0].run(["bridge", "fdb", "show", "dev", "vxlan100"]).stdout
    assert hv3_mac in fdb


def test_guest_namespaces_talk_across_hosts(lab_factory):
    lab = lab_factory(2)
    for index, host in enumerate(lab.hosts, start=1):
        add_vxlan(host, 200, "ff05::c8", f"fd00:200::{index}")
    left = lab.add_guest_namespace(lab.hosts[0], "br200", addresses=["fd00:200::a/64", "192.0.2.10/24"],
                                   mac="02:00:00:00:00:0a")
    right = lab.add_guest_namespace(lab.hosts[1], "br200", addresses=["fd00:200::b/64", "192.0.2.11/24"])
    assert left.mac == "02:00:00:00:00:0a"
    assert left.port in lab.hosts[0].run(["ip", "-o", "link", "show", "master", "br200"]).stdout
    assert left.run(["ping", "-6", "-c", "1", "-W", "3", "fd00:200::b"], check=False).returncode == 0
    assert right.run(["ping", "-4", "-c", "1", "-W", "3", "192.0.2.10"], check=False).returncode == 0


def test_down_removes_namespaces_veths_and_daemons(lab_factory):
    lab = lab_factory(2)
    host = lab.hosts[0]
    sshd_pids = [int(h.sshd_pid_path.read_text()) for h in lab.hosts]
    # A daemon inside the host (like qemu) and one outside it known only by its pid file (like a
    # qemu started from the root namespace by mistake).
    inside = subprocess.Popen(["ip", "netns", "exec", host.netns, "sleep", "600"])
    outside = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", str(host.state_dir)])
    (host.state_dir / "stray.pid").write_text(f"{outside.pid}\n")
    deadline = time.monotonic() + 5
    while inside.pid not in processes_in_netns(host.netns) and time.monotonic() < deadline:
        time.sleep(0.01)

    started = time.monotonic()
    lab.down()
    took = time.monotonic() - started

    assert inside.wait(timeout=5) is not None and outside.wait(timeout=5) is not None
    assert lab_leftovers(lab.lab_id) == ([], [], False)
    assert not any(_process_alive(pid) for pid in sshd_pids)
    assert took < 5
    lab.down()  # twice is fine


def test_cleanup_stale_removes_labs_whose_owner_died(lab, tmp_path):
    owner = subprocess.Popen(["sleep", "600"])
    stale = Lab(tmp_path / "stale", n_hosts=2, owner_pid=owner.pid).up()
    # Debris that no lab registered, e.g. from a run killed between `ip netns add` and registering.
    debris_id = next(i for i in (secrets.token_hex(2) for _ in range(100)) if lab_leftovers(i) == ([], [], False))
    debris = f"{NAME_PREFIX}{debris_id}-hv1"
    try:
        subprocess.run(["ip", "netns", "add", debris], check=True)
        owner.kill()
        owner.wait()

        removed = cleanup_stale()

        # Another test run on this machine may have removed them first, so look at what is left.
        assert not {host.netns for host in lab.hosts} & set(removed)
        assert lab_leftovers(stale.lab_id) == ([], [], False)
        assert lab_leftovers(debris_id) == ([], [], False)
        # The session lab's owner (us) is alive: untouched.
        assert all((NETNS_DIR / host.netns).exists() for host in lab.hosts)
        assert ssh(lab.hosts[0], ["true"]).returncode == 0
    finally:
        owner.kill()
        owner.wait()
        stale.down()
        subprocess.run(["ip", "netns", "del", debris], capture_output=True)


def test_command_line_up_and_down(lab, tmp_path):
    workdir = tmp_path / "cli"
    command = [sys.executable, "-m", "tests.lab"]
    up = subprocess.run([*command, "up", "--hosts", "1", "--workdir", str(workdir)],
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    description = json.loads(up.stdout)
    try:
        assert description == json.loads((workdir / "lab.json").read_text())
        entry = description["hosts"][0]
        result = subprocess.run(
            ["ssh", "-i", entry["client_key_path"], "-o", "StrictHostKeyChecking=yes",
             "-o", f"UserKnownHostsFile={description['known_hosts_path']}", "-o", "BatchMode=yes",
             f"root@{entry['ssh_address']}", "ip", "-o", "link"],
            capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert entry["underlay_device"] in result.stdout
        # Its owner is this test process (our child's parent), alive: cleanup_stale keeps it.
        cleanup_stale()
        assert (NETNS_DIR / entry["netns"]).exists()
    finally:
        down = subprocess.run([*command, "down", "--workdir", str(workdir)],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert lab_leftovers(description["lab_id"]) == ([], [], False)
