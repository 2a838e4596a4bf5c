"""nft.apply_ruleset without root: the rule set is rendered from state files and swapped in with one
`nft -f`, and only when it changed or the table is gone."""
import json
import shutil
import tempfile
from pathlib import Path

import pytest

from agents.hostside.uncloud_hostside import nft

PORT = {"tap": "uc0123456789n0", "mac": "02:00:f0:a9:c4:4e", "vni": 100,
        "ipv6": "2001:db8:1:1:0:f0ff:fea9:c44e", "link_local": "fe80::f0ff:fea9:c44e"}


@pytest.fixture
def state_dir():
    directory = Path(tempfile.mkdtemp(prefix="hs-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def with_a_port(state_dir):
    (state_dir / "ports").mkdir()
    (state_dir / "ports" / f"{PORT['tap']}.json").write_text(json.dumps(PORT))


def test_first_apply_swaps_the_rendered_file_in(commands, state_dir):
    with_a_port(state_dir)
    commands.expect("nft", "-f", state_dir / "nftables.conf.candidate")
    assert nft.apply_ruleset(str(state_dir)) is True
    applied = (state_dir / "nftables.conf").read_text()
    assert applied == nft.render_ruleset([], [PORT])
    assert f'iifname "{PORT["tap"]}" jump guard_{PORT["tap"]}' in applied
    assert f"ether saddr != {PORT['mac']} counter drop" in applied
    assert not (state_dir / "nftables.conf.candidate").exists()


def tables_in_kernel(monkeypatch, present):
    # Test double: whether the tables exist is asked over netlink of the namespace the program runs
    # in, and a unit test has no host of its own (the lab tests ask a real kernel).
    monkeypatch.setattr(nft, "tables_present", lambda: present)


def test_the_same_rule_set_is_not_applied_again(commands, state_dir, monkeypatch):
    with_a_port(state_dir)
    (state_dir / "nftables.conf").write_text(nft.render_ruleset([], [PORT]))
    tables_in_kernel(monkeypatch, True)
    assert nft.apply_ruleset(str(state_dir)) is False
    assert commands.ran == []


def test_a_table_that_vanished_is_applied_again(commands, state_dir, monkeypatch):
    with_a_port(state_dir)
    (state_dir / "nftables.conf").write_text(nft.render_ruleset([], [PORT]))
    tables_in_kernel(monkeypatch, False)
    commands.expect("nft", "-f", state_dir / "nftables.conf.candidate")
    assert nft.apply_ruleset(str(state_dir)) is True
