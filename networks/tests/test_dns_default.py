"""Guests are told a DNS server: by default this machine's own IPv6 resolvers; when there is none,
start-up (system checks) and the admin say so."""

import os
import subprocess
import sys

import pytest
from django.core.management import call_command

from accounts.tests.test_admin import staff_client  # noqa: F401  (the fixture)
from networks.checks import check_dns_servers
from uncloud_project.env import resolv_conf_ipv6_servers


def test_resolv_conf_gives_the_global_ipv6_servers(tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# written by a DHCP client\nsearch example.org\nnameserver 10.0.0.53\n"
                      "nameserver 2001:db8::53\nnameserver ::1\nnameserver fe80::1%eth0\nnameserver fe80::2\n"
                      "options edns0\nnameserver 2001:db8:1::53 # second\n")
    assert resolv_conf_ipv6_servers(str(resolv)) == ["2001:db8::53", "2001:db8:1::53"]
    assert resolv_conf_ipv6_servers(str(tmp_path / "missing")) == []


def settings_dns_servers(**environment) -> list[str]:
    """UNCLOUD_DNS_SERVERS as a fresh process computes it from its environment."""
    env = {key: value for key, value in os.environ.items() if key != "UNCLOUD_DNS_SERVERS"} | environment
    code = "from django.conf import settings; import django; django.setup(); print(','.join(settings.UNCLOUD_DNS_SERVERS))"
    completed = subprocess.run([sys.executable, "-c", code], env={**env, "DJANGO_SETTINGS_MODULE": "uncloud_project.settings"},
                               capture_output=True, text=True, check=True)
    return [server for server in completed.stdout.strip().split(",") if server]


def test_unset_means_this_machines_resolvers_and_set_wins():
    assert settings_dns_servers() == resolv_conf_ipv6_servers()
    assert settings_dns_servers(UNCLOUD_DNS_SERVERS="2001:db8::53") == ["2001:db8::53"]
    assert settings_dns_servers(UNCLOUD_DNS_SERVERS="") == []


def test_no_dns_server_is_a_warning_at_start_up(settings, capsys):
    settings.UNCLOUD_DNS_SERVERS = []
    assert [warning.id for warning in check_dns_servers(None)] == ["networks.W001"]
    call_command("check")
    assert "networks.W001" in capsys.readouterr().err
    settings.UNCLOUD_DNS_SERVERS = ["2001:db8::53"]
    assert check_dns_servers(None) == []


@pytest.mark.django_db
def test_no_dns_server_is_a_warning_in_the_admin(settings, staff_client):  # noqa: F811
    settings.UNCLOUD_DNS_SERVERS = []
    page = staff_client.get("/admin/").content.decode()
    assert "data-site-warning" in page and "No DNS server is announced to guests" in page
    settings.UNCLOUD_DNS_SERVERS = ["2001:db8::53"]
    assert "data-site-warning" not in staff_client.get("/admin/").content.decode()
