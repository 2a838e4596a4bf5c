"""Specs are checked strictly; odd strings never reach a command; failures have the right code."""
import ipaddress
import json
import subprocess
import uuid
from pathlib import Path

import pytest
from hostside_testlib import PROGRAM, PYTHON, fails, hostside, net_spec, nic, ok, vm_spec

from agents.hostside.uncloud_hostside import addressing, checks, errors, nat64, nft

PREFIX = "2001:db8:1:1::/64"
MAC = "02:00:f0:a9:c4:4e"
SHELL_TRAPS = ["; rm -rf /", "$(touch {marker})", "`touch {marker}`", "a'b", 'a"b', "a\nb",
               "a b", "a|touch {marker}", "a&&touch {marker}", "../../etc", "a,b=c", "-rf"]


# --- pure functions ------------------------------------------------------------------------------

def test_group_is_ff05_plus_the_vni():
    assert str(addressing.vxlan_group(100)) == "ff05::64"
    assert str(addressing.vxlan_group(16777215)) == "ff05::ff:ffff"


def test_eui64_of_the_prototype_example():
    prefix = ipaddress.IPv6Network("2a0a:e5c1:111:888::/64")
    address = addressing.eui64_address(prefix, "02:00:f0:a9:c4:4e")
    assert str(address) == "2a0a:e5c1:111:888:0:f0ff:fea9:c44e"
    assert str(addressing.link_local_address("02:00:f0:a9:c4:4e")) == "fe80::f0ff:fea9:c44e"


def test_router_mac_is_stable_and_locally_administered():
    assert addressing.router_mac(100) == "02:75:63:00:00:64"
    assert addressing.router_mac(16777215) == "02:75:63:ff:ff:ff"


def test_derived_tap_names_fit_the_kernel_limit():
    name = addressing.derived_tap_name(str(uuid.uuid4()), 7)
    assert len(name) <= 15 and checks.TAP_NAME_RE.match(name)


def test_ruleset_renders_every_guard(tmp_path):
    port = {"tap": "uctest0", "mac": MAC, "ipv6": "2001:db8:1:1:0:f0ff:fea9:c44e",
            "link_local": "fe80::f0ff:fea9:c44e", "vm_uuid": "x", "vni": 100}
    network = {"vxlan": "vxlan100", "bridge": "br100", "router_mac": "02:75:63:00:00:64"}
    text = nft.render_ruleset([network], [port])
    for needle in ("hook forward", "hook input", "hook output", f"ether saddr != {MAC}",
                   "nd-router-advert", "udp sport 547 udp dport 546", "@nh,176,16 68",
                   "fe80::f0ff:fea9:c44e", "chain ingress_uctest0", "delete table bridge uncloud",
                   "delete table inet uncloud_sg", 'iifname "br100" oifname "br*" oifname != "br100"'):
        assert needle in text


def test_security_group_rules_render_stateful_and_default_deny():
    port = {"tap": "uctest0", "mac": MAC, "ipv6": "2001:db8:1:1:0:f0ff:fea9:c44e",
            "link_local": "fe80::f0ff:fea9:c44e", "vm_uuid": "x", "vni": 100,
            "security_group_ingress": nft.parse_ingress_rules(
                [{"protocol": "tcp", "port_min": 22, "source": "::/0"},
                 {"protocol": "udp", "port_min": 5000, "port_max": 5010, "source": "2001:db8::/32"},
                 {"protocol": "any", "source": "2001:db8:ff::/48"}], "ingress")}
    text = nft.render_ruleset([], [port])
    for needle in ("table inet uncloud_sg", "delete table inet uncloud_sg", "hook forward",
                   "ip6 daddr vmap { 2001:db8:1:1:0:f0ff:fea9:c44e : jump ingress_uctest0, "
                   "fe80::f0ff:fea9:c44e : jump ingress_uctest0 }",
                   "ct state established,related accept", "meta l4proto ipv6-icmp accept",
                   "meta l4proto tcp th dport 22 accept",
                   "ip6 saddr 2001:db8::/32 meta l4proto udp th dport 5000-5010 accept",
                   "ip6 saddr 2001:db8:ff::/48 meta nfproto ipv6 accept", 'counter drop comment "security-group"'):
        assert needle in text, needle
    # The rule lines come before the final drop.
    chain = text[text.index("chain ingress_uctest0"):]
    assert chain.index("dport 22") < chain.index('comment "security-group"')


@pytest.mark.parametrize("rule", [
    {"protocol": "tcp", "source": "::/0", "port_min": 0},
    {"protocol": "tcp", "source": "::/0", "port_min": 80, "port_max": 79},
    {"protocol": "icmpv6", "source": "::/0", "port_min": 1},
    {"protocol": "gre", "source": "::/0"},
    {"protocol": "tcp", "source": "10.0.0.0/8", "port_min": 1},
    {"protocol": "tcp", "source": "::/0; drop", "port_min": 1},
    {"protocol": "tcp", "source": "::/0", "port_min": "22 accept"},
    {"protocol": "tcp", "source": "::/0", "port_min": 22, "extra": 1},
])
def test_bad_security_group_rules_are_refused(rule):
    with pytest.raises(errors.HostsideError) as refused:
        nft.parse_ingress_rules([rule], "ingress")
    assert refused.value.code == "bad_spec"


def test_nat64_pools_are_checked():
    good = {"id": 1, "prefix": "192.0.2.0/29", "nat64_prefix": "fd00:64::/96", "translator_address": "198.51.100.1",
            "maps": [{"ipv4": "192.0.2.1", "ipv6": "2001:db8::1", "via": "fd00:1::2"}]}
    parsed = nat64.parse_nat64_pool(good, "pools[0]")
    assert parsed["tun"] == "nat64p1"
    assert nat64.render_tayga_config(parsed) == (
        "tun-device nat64p1\nipv4-addr 198.51.100.1\nprefix fd00:64::/96\nmap 192.0.2.1 2001:db8::1\n")
    for change in ({"translator_address": "192.0.2.3"}, {"nat64_prefix": "fd00:64::/64"},
                   {"maps": [{"ipv4": "10.0.0.1", "ipv6": "2001:db8::1"}]},
                   {"maps": [{"ipv4": "192.0.2.1", "ipv6": "2001:db8::1"}, {"ipv4": "192.0.2.2", "ipv6": "2001:db8::1"}]},
                   {"maps": [{"ipv4": "192.0.2.1", "ipv6": "2001:db8::1; reboot"}]}, {"prefix": "192.0.2.1/29"}):
        with pytest.raises(errors.HostsideError):
            nat64.parse_nat64_pool({**good, **change}, "pools[0]")


# --- the program as SSH runs it --------------------------------------------------------------------

def test_host_info(lone_host):
    result = ok(lone_host, "host-info")
    assert result["sha256"] == __import__("hashlib").sha256(PROGRAM.read_bytes()).hexdigest()
    assert result["binaries"]["ip"] and result["binaries"]["qemu-system-x86_64"]
    assert result["cores"] >= 1 and result["memory_mib"]["total"] > 0
    assert result["disk_free_bytes"] > 0
    assert isinstance(result["kvm_usable"], bool)


def test_answer_is_one_json_object_and_exit_status_2_for_bad_specs(lone_host):
    for argv, stdin in (([], "{}"), (["no-such-verb"], "{}"), (["inventory"], "not json"),
                        (["inventory"], "[]"), (["inventory", "extra"], "{}")):
        completed = lone_host.run([PYTHON, str(PROGRAM), *argv], input=stdin, check=False)
        answer = json.loads(completed.stdout)
        assert completed.returncode == 2 and answer["error"]["code"] == "bad_spec", answer


def base_vm_spec(host, **changes):
    return {"state_dir": str(host.state_dir),
            **vm_spec("11111111-2222-3333-4444-555555555555", [nic(MAC, 100, PREFIX)]), **changes}


def base_net_spec(host, **changes):
    return {"state_dir": str(host.state_dir), **net_spec(100, PREFIX, host), **changes}


@pytest.mark.parametrize("changes", [
    {"vni": 0}, {"vni": 16777216}, {"vni": "100"}, {"vni": True}, {"vni": 1.5},
    {"prefix": "2001:db8::/48"}, {"prefix": "2001:db8::1/64"}, {"prefix": "10.0.0.0/24"},
    {"prefix": "ff05::/64"}, {"underlay_device": "a" * 16}, {"underlay_device": ""},
    {"dns_servers": ["192.0.2.1"]}, {"dns_servers": "2001:db8::53"},
    {"dns_search": ["bad_domain"]}, {"dns_search": ["-a.example"]}, {"mtu": 100},
    {"state_dir": "relative/dir"}, {"state_dir": "/tmp/../etc"}, {"state_dir": "/"},
    {"state_dir": "/tmp/" + "x" * 60}, {"colour": "blue"},
])
def test_net_up_refuses_bad_fields(lone_host, changes):
    fails(lone_host, "net-up", base_net_spec(lone_host, **changes), "bad_spec")


@pytest.mark.parametrize("changes", [
    {"uuid": "not-a-uuid"}, {"uuid": "11111111-2222-3333-4444-55555555555G"},
    {"uuid": "11111111222233334444555555555555"}, {"uuid": "aaaaaaaa-2222-3333-4444-555555555555".upper()},
    {"cores": 0}, {"memory_mib": "512M"}, {"accel": "xen"}, {"name": ""}, {"name": "x" * 64},
    {"nics": [nic("03:00:00:00:00:01", 100, PREFIX)]},           # multicast MAC
    {"nics": [nic("02:75:63:00:00:64", 100, PREFIX)]},           # a router's MAC
    {"nics": [{"mac": MAC, "vni": 100, "ipv6": "2001:db8:1:1::5"}]},  # not the EUI-64
    {"nics": [nic(MAC, 100, PREFIX, tap="a" * 16)]},
    {"nics": [nic(MAC, 100, PREFIX, tap="br100")]},
    {"nics": [nic(MAC, 100, PREFIX, tap="Tap0")]},
    {"nics": [nic(MAC, 100, PREFIX, tap="t0"), nic("02:00:00:00:00:02", 100, PREFIX, tap="t0")]},
    {"disks": [{"path": "/etc/passwd", "format": "raw"}]},
    {"disks": [{"path": "/tmp/nonexistent.qcow2", "format": "qcow2"}]},
    {"disks": [{"format": "qcow2"}]},
    {"kernel": "/boot/vmlinuz"}, {"cmdline": "console=ttyS0"},
])
def test_vm_up_refuses_bad_fields(lone_host, changes):
    fails(lone_host, "vm-up", base_vm_spec(lone_host, **changes), "bad_spec")


def test_paths_must_stay_under_state_dir_even_through_symlinks(lone_host):
    state_dir = Path(lone_host.state_dir)
    (state_dir / "escape.qcow2").unlink(missing_ok=True)
    (state_dir / "escape.qcow2").symlink_to("/etc/passwd")
    inside = state_dir / "disk.raw"
    inside.write_bytes(b"\0" * 512)
    for path in (str(state_dir / "escape.qcow2"), f"{state_dir}/../{state_dir.name}/disk.raw",
                 f"{state_dir}/disk.raw,readonly=off", str(state_dir)):
        spec = base_vm_spec(lone_host, disks=[{"path": path, "format": "raw"}])
        fails(lone_host, "vm-up", spec, "bad_spec")
    spec = base_vm_spec(lone_host, disks=[{"path": str(inside), "format": "raw", "cache": "x"}])
    fails(lone_host, "vm-up", spec, "bad_spec")


@pytest.mark.parametrize("trap", SHELL_TRAPS)
def test_shell_metacharacters_are_refused_everywhere(lone_host, trap, tmp_path):
    marker = tmp_path / "touched"
    value = trap.format(marker=marker)
    attempts = [
        ("vm-up", base_vm_spec(lone_host, name=value)),
        ("vm-up", base_vm_spec(lone_host, uuid=value)),
        ("vm-up", base_vm_spec(lone_host, nics=[nic(MAC, 100, PREFIX, tap=value)])),
        ("vm-up", base_vm_spec(lone_host, disks=[{"path": f"{lone_host.state_dir}/{value}",
                                                  "format": "raw"}])),
        ("net-up", base_net_spec(lone_host, underlay_device=value)),
        ("net-up", base_net_spec(lone_host, dns_search=[value])),
        ("net-up", base_net_spec(lone_host, state_dir=f"/tmp/{value}")),
        ("vm-down", {"state_dir": str(lone_host.state_dir), "uuid": value}),
        ("vm-status", {"state_dir": str(lone_host.state_dir), "uuid": value}),
    ]
    for verb, attempt in attempts:
        fails(lone_host, verb, attempt, "bad_spec")
    assert not marker.exists()
    links = lone_host.run(["ip", "-o", "link", "show"]).stdout
    assert "vxlan" not in links and "br100" not in links


def test_cmdline_is_one_argument_and_must_be_one_printable_line(lone_host):
    kernel = Path(lone_host.state_dir) / "vmlinuz"
    kernel.write_bytes(b"not really a kernel")
    fails(lone_host, "vm-up", base_vm_spec(lone_host, kernel=str(kernel), cmdline="a\nb"), "bad_spec")
    fails(lone_host, "vm-up", base_vm_spec(lone_host, kernel=str(kernel), cmdline="a\x00b"), "bad_spec")


def binaries_dir_without(tmp_path, *left_out):
    """A PATH directory holding everything the program runs except left_out."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for name in ("ip", "nft", "radvd", "qemu-system-x86_64", "qemu-img", "env"):
        if name not in left_out:
            (directory / name).symlink_to(subprocess.run(["which", name], capture_output=True,
                                                         text=True, check=True).stdout.strip())
    return str(directory)


def test_missing_qemu_is_named(lone_host, tmp_path):
    path = binaries_dir_without(tmp_path, "qemu-system-x86_64")
    status, answer = hostside(lone_host, "vm-up", base_vm_spec(lone_host), path=path)
    assert status == 1 and answer["error"]["code"] == "missing_binary", answer
    assert answer["error"]["missing"] == ["qemu-system-x86_64"]
    assert "qemu-system-x86_64" in answer["error"]["message"]


def test_missing_radvd_is_named(lone_host, tmp_path):
    path = binaries_dir_without(tmp_path, "radvd")
    status, answer = hostside(lone_host, "net-up", base_net_spec(lone_host), path=path)
    assert status == 1 and answer["error"]["code"] == "missing_binary", answer
    assert answer["error"]["missing"] == ["radvd"]
    info = hostside(lone_host, "host-info", {"state_dir": str(lone_host.state_dir)}, path=path)[1]
    assert info["result"]["binaries"]["radvd"] is None


def test_vm_up_needs_the_network_up(lone_host):
    error = fails(lone_host, "vm-up", base_vm_spec(lone_host), "not_found")
    assert "vni 100" in error["message"] and "net-up" in error["message"]


def test_net_up_needs_the_underlay(lone_host):
    error = fails(lone_host, "net-up", base_net_spec(lone_host, underlay_device="nosuchdev"),
                  "not_found")
    assert "nosuchdev" in error["message"]


def test_full_disk_is_disk_full(lone_host):
    mount_point = Path(lone_host.state_dir) / "small"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], check=True)
    try:
        with open(mount_point / "filler", "wb") as filler:
            try:
                filler.write(b"x" * 200_000)
            except OSError:
                pass
        lone_host.run(["ip", "link", "add", "ulfull", "type", "veth", "peer", "name", "ulfull1"])
        spec = base_net_spec(lone_host, state_dir=str(mount_point), underlay_device="ulfull")
        error = fails(lone_host, "net-up", spec, "disk_full")
        assert "space" in error["message"]
    finally:
        lone_host.run(["ip", "link", "del", "ulfull"], check=False)
        stale = subprocess.run(["pgrep", "-f", f"{mount_point}/"], capture_output=True, text=True)
        assert stale.stdout == ""
        lone_host.run(["ip", "link", "del", "vxlan100"], check=False)
        lone_host.run(["ip", "link", "del", "br100"], check=False)
        subprocess.run(["umount", str(mount_point)], check=True)
