"""The NoCloud network config every guest gets, rendered by cloud-init's own renderer (Debian's
cloud-init 22.4, `cloud-init devel net-convert`) into what ifupdown, netplan and NetworkManager
images read: each must bring every NIC up by itself and take its address by SLAAC."""

import json
import shutil
import subprocess

import pytest

from images.hostwork import network_config
from networks.actions import do_create_network, do_create_public_network
from networks.models import PrefixPool
from vms.actions import do_create_vm

CLOUD_INIT = shutil.which("cloud-init") or "/usr/bin/cloud-init"


@pytest.fixture
def two_nic_vm(alice, alice_project):
    PrefixPool.objects.create(prefix="2001:db8:100::/56")
    public = do_create_public_network(None, "public")
    private = do_create_network(alice, alice_project, "backend")
    vm, _ = do_create_vm(alice, alice_project, name="web1", cores=1, memory_mib=256, disk_mib=1024,
                         networks=[public, private])
    return vm


def render(config: dict, output_kind: str, tmp_path) -> dict:
    """{relative path: text} of what cloud-init writes for this config on a Debian guest."""
    source = tmp_path / "network-config"
    source.write_text(json.dumps(config, indent=1) + "\n")  # as vm-metadata writes it to the drive
    out = tmp_path / output_kind
    subprocess.run([CLOUD_INIT, "devel", "net-convert", "-p", str(source), "-k", "yaml", "-D", "debian",
                    "-O", output_kind, "-d", str(out)], check=True, capture_output=True, text=True)
    return {str(path.relative_to(out)): path.read_text() for path in out.rglob("*") if path.is_file()}


def meaningful_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.django_db
def test_ifupdown_brings_every_nic_up_by_slaac(two_nic_vm, tmp_path):
    files = render(network_config(two_nic_vm), "eni", tmp_path)
    lines = meaningful_lines(files["etc/network/interfaces.d/50-cloud-init"])
    for index in (0, 1):
        # `auto` makes ifupdown raise it at boot; `inet6 auto` is SLAAC. ("inet manual" = no network.)
        assert f"auto eth{index}" in lines and f"iface eth{index} inet6 auto" in lines, lines
    assert not any("inet manual" in line for line in lines), lines
    rules = files["etc/udev/rules.d/70-persistent-net.rules"]
    for nic in two_nic_vm.nics.all():
        assert f'ATTR{{address}}=="{nic.mac}", NAME="eth{nic.index}"' in rules


@pytest.mark.django_db
def test_netplan_accepts_router_advertisements(two_nic_vm, tmp_path):
    text = render(network_config(two_nic_vm), "netplan", tmp_path)["etc/netplan/50-cloud-init.yaml"]
    lines = meaningful_lines(text)
    for nic in two_nic_vm.nics.all():
        block = text[text.index(f"eth{nic.index}:"):]
        assert f"macaddress: {nic.mac}" in block and f"set-name: eth{nic.index}" in block
    assert lines.count("accept-ra: true") == 2, lines
    assert "accept-ra: false" not in lines and "dhcp4: true" not in lines


@pytest.mark.django_db
def test_network_manager_configures_ipv6_automatically(two_nic_vm, tmp_path):
    files = render(network_config(two_nic_vm), "network-manager", tmp_path)
    for nic in two_nic_vm.nics.all():
        lines = meaningful_lines(files[f"etc/NetworkManager/system-connections/cloud-init-eth{nic.index}.nmconnection"])
        assert f"mac-address={nic.mac.upper()}" in lines
        ipv6 = lines[lines.index("[ipv6]"):]
        assert "method=auto" in ipv6 and "method=ignore" not in lines and "method=disabled" not in lines


@pytest.mark.django_db
def test_systemd_networkd_leaves_router_advertisements_on(two_nic_vm, tmp_path):
    files = render(network_config(two_nic_vm), "networkd", tmp_path)
    for nic in two_nic_vm.nics.all():
        lines = meaningful_lines(files[f"etc/systemd/network/10-cloud-init-eth{nic.index}.network"])
        assert f"MACAddress={nic.mac}" in lines
        # networkd accepts RAs unless told not to (and the host does not forward).
        assert "IPv6AcceptRA=no" not in lines and "LinkLocalAddressing=no" not in lines
