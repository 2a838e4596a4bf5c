"""net-up of a network that is already up: answered from cheap reads of the real state (no process
spawned), and anything that drifted (a link, radvd, a route, a sysctl, an nft table, the spec)
still takes the full path and is repaired."""
import json
import shutil
from pathlib import Path

from hostside_testlib import PROGRAM, PYTHON, hostside, kill_and_wait, net_spec

PREFIX = "2001:db8:100:1::/64"
OTHER_PREFIX = "2001:db8:100:2::/64"
NAT64_PREFIX = "64:ff9b::/96"


class SpawnLog:
    """A PATH of wrappers around the only binaries net-up may run (ip, nft, radvd): each logs its
    argv and execs the real one. Any other program would not be found, so it shows up as an error."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.log = directory / "spawned.log"
        for name in ("ip", "nft", "radvd"):
            wrapper = directory / name
            wrapper.write_text(f'#!/bin/sh\necho "{name} $*" >> {self.log}\nexec {shutil.which(name)} "$@"\n')
            wrapper.chmod(0o755)

    def net_up(self, host, spec):
        self.log.write_text("")
        status, answer = hostside(host, "net-up", {"state_dir": str(host.state_dir), **spec},
                                  path=str(self.directory))
        assert status == 0 and answer["ok"], answer
        return answer["result"], self.log.read_text().splitlines()


def full_spec(hosts, **extra):
    host, peer = hosts
    return net_spec(100, PREFIX, host, underlay_address=host.underlay_address, mtu=1400, default_router=True,
                    routes=[{"prefix": NAT64_PREFIX, "via": peer.underlay_address}], **extra)


def routes_of(host, prefix):
    return host.run(["ip", "-6", "route", "show", prefix]).stdout


def test_net_up_again_spawns_nothing_and_answers_the_same(hosts, tmp_path):
    host = hosts[0]
    spawns = SpawnLog(tmp_path)
    spec = full_spec(hosts)
    first, first_spawned = spawns.net_up(host, spec)
    assert first_spawned and "started radvd" in first["changes"]
    second, second_spawned = spawns.net_up(host, spec)
    assert second_spawned == []  # the old net-up ran `ip` and `nft` nine times here
    assert second == {**first, "changes": []}

    # The netlink reader sees the links as `ip -j -d` does (one predicate judges both).
    probe = ("import json, sys; sys.path.insert(0, sys.argv[1]); from uncloud_hostside import netlink, system\n"
             "print(json.dumps([[netlink.link_info(n), system.link_info(n)] for n in sys.argv[2:]]))")
    pairs = json.loads(host.run([PYTHON, "-c", probe, str(PROGRAM), "vxlan100", "br100",
                                 host.underlay_device, "nosuchlink"]).stdout)
    for ours, theirs in pairs[:3]:
        assert {key: ours.get(key) for key in ("ifname", "ifindex", "mtu", "address", "master")} == \
            {key: theirs.get(key) for key in ("ifname", "ifindex", "mtu", "address", "master")}
        assert ("UP" in ours["flags"]) == ("UP" in theirs["flags"])
        assert ours["linkinfo"]["info_kind"] == theirs["linkinfo"]["info_kind"]
        for key, value in ours["linkinfo"]["info_data"].items():
            assert theirs["linkinfo"]["info_data"][key] == value, key
    assert set(pairs[0][0]["linkinfo"]["info_data"]) == {"id", "group6", "local6", "link", "port", "ttl"}
    assert set(pairs[1][0]["linkinfo"]["info_data"]) == {"mcast_snooping", "nf_call_ip6tables"}
    assert pairs[3] == [None, None]


def test_net_up_repairs_what_drifted(hosts, tmp_path):
    host, peer = hosts
    spawns = SpawnLog(tmp_path)
    spec = full_spec(hosts)
    first, _ = spawns.net_up(host, spec)

    def repaired(*expected_changes):
        answer, spawned = spawns.net_up(host, spec)
        assert spawned, "drift went unnoticed"
        for change in expected_changes:
            assert change in answer["changes"], answer["changes"]
        again, spawned = spawns.net_up(host, spec)
        assert spawned == [] and again == {**answer, "changes": []}  # and fast again once repaired
        return answer

    host.run(["ip", "link", "del", "br100"])
    assert "created br100" in repaired()["changes"]
    assert json.loads(host.run(["ip", "-j", "link", "show", "vxlan100"]).stdout)[0]["master"] == "br100"

    host.run(["ip", "link", "set", "vxlan100", "down"])
    repaired()
    assert "UP" in json.loads(host.run(["ip", "-j", "link", "show", "vxlan100"]).stdout)[0]["flags"]

    kill_and_wait(first["radvd_pid"])
    assert repaired("started radvd")["radvd_pid"] != first["radvd_pid"]

    host.run(["ip", "-6", "route", "del", PREFIX, "dev", "br100"])
    repaired()
    assert "dev br100" in routes_of(host, PREFIX)
    host.run(["ip", "-6", "route", "del", NAT64_PREFIX])
    repaired("routes 64:ff9b::/96")
    assert f"via {peer.underlay_address}" in routes_of(host, NAT64_PREFIX)

    host.run(["nft", "delete", "table", "inet", "uncloud_sg"])
    repaired("applied nft rules")
    host.run(["nft", "list", "table", "inet", "uncloud_sg"])

    host.run(["sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/br100/accept_ra"])
    repaired()
    assert host.run(["cat", "/proc/sys/net/ipv6/conf/br100/accept_ra"]).stdout == "0\n"
    host.run(["sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/all/forwarding"])
    repaired()
    assert host.run(["cat", "/proc/sys/net/ipv6/conf/all/forwarding"]).stdout == "1\n"

    # A vxlan someone rebuilt with another group (the full path replaces it, so must this check).
    host.run(["ip", "link", "del", "vxlan100"])
    host.run(["ip", "-6", "link", "add", "vxlan100", "type", "vxlan", "id", "100", "dstport", "4789",
              "group", "ff05::1:64", "dev", host.underlay_device, "ttl", "5"])
    repaired("replaced vxlan100")

    # A state file that says something else (a half-finished run, a hand edit) is not trusted.
    network_json = Path(host.state_dir) / "networks/100/network.json"
    network_json.write_text(network_json.read_text().replace("example.org", "example.com"))
    repaired()
    assert "example.org" in network_json.read_text()


def test_net_up_applies_every_changed_part_of_the_spec(hosts, tmp_path):
    host, peer = hosts
    spawns = SpawnLog(tmp_path)
    spec = full_spec(hosts)
    spawns.net_up(host, spec)
    radvd_conf = Path(host.state_dir) / "networks/100/radvd.conf"

    def changed(**extra):
        nonlocal spec
        spec = {**spec, **extra}
        answer, spawned = spawns.net_up(host, spec)
        assert spawned, f"a changed {', '.join(extra)} went unnoticed"
        _, spawned = spawns.net_up(host, spec)
        assert spawned == []
        return answer

    assert changed(mtu=1300)["mtu"] == 1300
    assert "AdvLinkMTU 1300;" in radvd_conf.read_text()
    assert json.loads(host.run(["ip", "-j", "link", "show", "vxlan100"]).stdout)[0]["mtu"] == 1300

    assert changed(dns_servers=["2001:db8:100:1::54"])["dns_servers"] == ["2001:db8:100:1::54"]
    assert "RDNSS 2001:db8:100:1::54" in radvd_conf.read_text()
    changed(dns_search=["example.net"])
    assert "DNSSL example.net" in radvd_conf.read_text()
    changed(default_router=False)
    assert "AdvDefaultLifetime 0;" in radvd_conf.read_text()

    assert changed(prefix=OTHER_PREFIX)["prefix"] == OTHER_PREFIX
    assert f"prefix {OTHER_PREFIX}" in radvd_conf.read_text()
    assert "dev br100" in routes_of(host, OTHER_PREFIX)

    changed(routes=[{"prefix": "64:ff9b:1::/96", "via": peer.underlay_address}])
    assert f"via {peer.underlay_address}" in routes_of(host, "64:ff9b:1::/96")

    # Another address on the underlay to send from: the VXLAN is rebuilt with it.
    host.run(["ip", "-6", "addr", "add", "fd00:1::1:1/64", "dev", host.underlay_device, "nodad"])
    answer = changed(underlay_address="fd00:1::1:1")
    assert "replaced vxlan100" in answer["changes"] and answer["underlay_address"] == "fd00:1::1:1"
    assert json.loads(host.run(["ip", "-j", "-d", "link", "show", "vxlan100"]).stdout)[0][
        "linkinfo"]["info_data"]["local6"] == "fd00:1::1:1"
    # Without a named address the device's first one is used; a new address comes first in the
    # kernel's list, so adding one changes it (the check reads the same list in the same order).
    spec.pop("underlay_address")
    spawns.net_up(host, spec)
    _, spawned = spawns.net_up(host, spec)
    assert spawned == []
    host.run(["ip", "-6", "addr", "add", "fd00:1::2:2/64", "dev", host.underlay_device, "nodad"])
    answer, spawned = spawns.net_up(host, spec)
    assert spawned and answer["underlay_address"] == "fd00:1::2:2"
