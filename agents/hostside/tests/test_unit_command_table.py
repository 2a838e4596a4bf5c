"""The command table itself: a test that runs a command it did not expect fails."""
import pytest
from command_table import CommandTable, UnexpectedCommand

from agents.hostside.uncloud_hostside import system


def test_an_expected_command_answers_from_the_table(commands):
    commands.expect("ip", "-j", "-d", "link", "show", "dev", "br7", stdout='[{"ifname": "br7"}]')
    assert system.link_info("br7") == {"ifname": "br7"}
    assert commands.ran == [["ip", "-j", "-d", "link", "show", "dev", "br7"]]


def test_an_unexpected_command_is_refused():
    table = CommandTable()
    table.expect("ip", "link", "show")
    with pytest.raises(UnexpectedCommand):
        table.run(["/usr/sbin/ip", "link", "del", "dev", "br7"], text=True)
    assert table.unexpected == [["ip", "link", "del", "dev", "br7"]]
    assert table.unused() == [["ip", "link", "show"]]


def test_a_failing_command_becomes_the_programs_error(commands):
    commands.expect("nft", "-f", "/x/nftables.conf", returncode=1, stderr="Error: syntax error")
    with pytest.raises(system.HostsideError) as failure:
        system.run_command(["nft", "-f", "/x/nftables.conf"])
    assert failure.value.code == "command_failed" and "syntax error" in failure.value.stderr


def test_a_full_disk_is_named(commands):
    commands.expect("qemu-img", "convert", "a", "b", returncode=1, stderr="No space left on device")
    with pytest.raises(system.HostsideError) as failure:
        system.run_command(["qemu-img", "convert", "a", "b"])
    assert failure.value.code == "disk_full"
