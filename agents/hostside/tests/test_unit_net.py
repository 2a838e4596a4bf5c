"""net's VXLAN step without root: what it runs for a missing, a matching and a wrong link."""
import json

import pytest

from agents.hostside.uncloud_hostside import net

SHOW_VXLAN = ("ip", "-j", "-d", "link", "show", "dev", "vxlan100")
ADD_VXLAN = ("ip", "-6", "link", "add", "vxlan100", "type", "vxlan", "id", "100", "dstport", "4789",
             "group", "ff05::64", "dev", "ul0", "ttl", "5")


@pytest.fixture
def sysctls(monkeypatch):
    """/proc/sys writes recorded instead of made (they need the host's namespace and root)."""
    written = []
    monkeypatch.setattr(net, "write_interface_sysctl", lambda *args: written.append(args))
    return written


def vxlan_link(group="ff05::64", underlay="ul0"):
    return json.dumps([{"ifname": "vxlan100", "linkinfo": {"info_kind": "vxlan", "info_data": {
        "id": 100, "group6": group, "link": underlay, "port": 4789, "ttl": 5}}}])


def test_a_missing_vxlan_is_created(commands, sysctls):
    commands.expect(*SHOW_VXLAN, returncode=1, stderr='Device "vxlan100" does not exist.')
    commands.expect(*ADD_VXLAN)
    changes = []
    net.ensure_vxlan(100, "ul0", changes)
    assert changes == ["created vxlan100"]
    assert sysctls == [("vxlan100", "disable_ipv6", 1)]


def test_a_matching_vxlan_is_left_alone(commands, sysctls):
    commands.expect(*SHOW_VXLAN, stdout=vxlan_link())
    changes = []
    net.ensure_vxlan(100, "ul0", changes)
    assert changes == [] and sysctls == []


def test_a_vxlan_on_the_wrong_group_is_replaced(commands, sysctls):
    commands.expect(*SHOW_VXLAN, stdout=vxlan_link(group="ff05::65"))
    commands.expect("ip", "link", "del", "dev", "vxlan100")
    commands.expect(*ADD_VXLAN)
    changes = []
    net.ensure_vxlan(100, "ul0", changes)
    assert changes == ["replaced vxlan100"]
