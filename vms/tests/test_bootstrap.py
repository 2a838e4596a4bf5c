import json

from django.contrib.auth import get_user_model
from django.core.management import call_command

from agents.models import Host, Operation
from images.models import Image
from networks.models import Network, PrefixPool


def test_bootstrap_is_idempotent_and_makes_a_usable_installation(db, settings, tmp_path):
    settings.DATA_DIR = tmp_path
    call_command("bootstrap", "--local-host", "--demo-image")
    call_command("bootstrap", "--local-host", "--demo-image")
    users = get_user_model().objects
    assert users.get(username="admin").is_staff and not users.get(username="demo").is_staff
    credentials = json.loads((tmp_path / "credentials.json").read_text())
    assert users.get(username="demo").check_password(credentials["demo"])
    assert (tmp_path / "credentials.json").stat().st_mode & 0o077 == 0
    assert PrefixPool.objects.count() == 1 and Network.objects.filter(is_public=True).count() == 1
    host = Host.objects.get()
    assert host.transport == "local" and len(host.state_dir) <= 57
    assert Operation.objects.filter(kind="host.check", host=host).count() == 2
    image = Image.objects.get()
    assert image.name == "uncloud-demo" and image.status == "available" and image.is_public
    assert len(image.checksum_sha256) == 64 and image.virtual_size_bytes > 0


def test_the_underlay_is_the_default_route_device_ipv6_first(tmp_path):
    from vms.management.commands.bootstrap import _default_route_device

    ipv6, ipv4 = tmp_path / "ipv6_route", tmp_path / "route"
    zeros = "0" * 32
    ipv6.write_text(
        f"fd000000000000000000000000000000 40 {zeros} 00 {zeros} 00000100 00000002 00000000 00000001 eth1\n"
        f"{zeros} 00 {zeros} 00 {zeros} ffffffff 00000001 00000000 00200200       lo\n"
        f"{zeros} 00 {zeros} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 uplink0\n")
    ipv4.write_text("Iface\tDestination\tGateway\tFlags\nens3\t00000000\t0100000A\t0003\n")
    assert _default_route_device(str(ipv6), str(ipv4)) == "uplink0"
    ipv6.write_text(f"{zeros} 00 {zeros} 00 {zeros} ffffffff 00000001 00000000 00200200       lo\n")
    assert _default_route_device(str(ipv6), str(ipv4)) == "ens3"  # no IPv6 default: the IPv4 one
    assert _default_route_device(str(tmp_path / "none"), str(tmp_path / "none")) == "lo"
