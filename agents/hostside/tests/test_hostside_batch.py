"""`batch`: several verbs in one request, in order, stopping at the first failure; and the metadata
service following a bridge that was made again (the create path's metadata-up)."""
import json
import subprocess

from hostside_testlib import fails, net_spec, ok

VM_A = "9d000000-0000-4000-8000-00000000000a"
VM_B = "9d000000-0000-4000-8000-00000000000b"
VM_C = "9d000000-0000-4000-8000-00000000000c"
DISK_UUID = "9d000000-0000-4000-8000-000000000001"
PREFIX = "2001:db8:410:1::/64"


def metadata_spec(vm_uuid):
    return {"uuid": vm_uuid, "hostname": "web", "ssh_keys": [], "user_data": ""}


def test_batch_runs_in_order_and_stops_at_the_first_failure(lone_host):
    host = lone_host
    metadata = host.state_dir / "metadata"
    error = fails(host, "batch", {"state_dir": str(host.state_dir), "calls": [
        {"verb": "vm-metadata", "spec": metadata_spec(VM_A)},
        # No such base image on this host: not_found, which the control plane answers by shipping it.
        {"verb": "disk-ensure", "spec": {"disk_uuid": DISK_UUID, "size_mib": 64, "base_sha256": "0" * 64}},
        {"verb": "vm-metadata", "spec": metadata_spec(VM_B)},
    ]}, "not_found")
    assert (error["batch_index"], error["batch_verb"]) == (1, "disk-ensure")
    assert [result["uuid"] for result in error["batch_results"]] == [VM_A]
    assert (metadata / VM_A / "cidata.iso").exists()
    assert not (metadata / VM_B).exists()  # nothing after the failure ran

    answer = ok(host, "batch", calls=[{"verb": "vm-metadata", "spec": metadata_spec(VM_A)},
                                      {"verb": "vm-metadata", "spec": metadata_spec(VM_B)}])
    assert [result["uuid"] for result in answer["results"]] == [VM_A, VM_B]
    assert answer["results"][0]["changes"] == [] and answer["results"][1]["changes"]  # each verb idempotent
    ok(host, "batch", calls=[{"verb": "vm-metadata-delete", "spec": {"uuid": VM_A}},
                             {"verb": "vm-metadata-delete", "spec": {"uuid": VM_B}}])
    assert not (metadata / VM_A).exists() and not (metadata / VM_B).exists()


def test_batch_checks_every_call_before_running_any(lone_host):
    host = lone_host
    first = {"verb": "vm-metadata", "spec": metadata_spec(VM_C)}
    for bad in ({"verb": "batch", "spec": {"calls": []}}, {"verb": "metadata-serve", "spec": {}},
                {"verb": "no-such-verb", "spec": {}}, {"verb": "vm-metadata"}, {"verb": "vm-metadata", "spec": []},
                {"verb": "vm-metadata", "spec": {}, "extra": 1}, "vm-metadata"):
        fails(host, "batch", {"state_dir": str(host.state_dir), "calls": [first, bad]}, "bad_spec")
    fails(host, "batch", {"state_dir": str(host.state_dir), "calls": [first] * 33}, "bad_spec")
    fails(host, "batch", {"state_dir": str(host.state_dir), "calls": "vm-metadata"}, "bad_spec")
    assert not (host.state_dir / "metadata" / VM_C).exists()


def ifindex(host, bridge):
    return int(host.run(["cat", f"/sys/class/net/{bridge}/ifindex"]).stdout)


def served(host):
    return json.loads((host.state_dir / "metadata" / "server-state.json").read_text())["served"]


def test_metadata_service_follows_a_bridge_made_again(hosts):
    host = hosts[0]
    ok(host, "net-up", **net_spec(410, PREFIX, host))
    first = ok(host, "metadata-up")
    assert first["bridges"] == ["br410"] and served(host) == {"br410": ifindex(host, "br410")}
    assert ok(host, "metadata-up")["changes"] == []
    old_index = ifindex(host, "br410")

    # net-down and net-up make a new br410: the listener on the old one is useless, and
    # metadata-up must not answer before the service listens on the new one.
    ok(host, "net-down", vni=410)
    ok(host, "net-up", **net_spec(410, PREFIX, host))
    assert ifindex(host, "br410") != old_index
    again = ok(host, "metadata-up")
    assert again["pid"] == first["pid"] and again["bridges"] == ["br410"]
    assert served(host) == {"br410": ifindex(host, "br410")}
    # It answers there: the host itself is no guest, so it is refused (403), which needs a listener.
    completed = subprocess.run(["ip", "netns", "exec", host.netns, "busybox", "wget", "-q", "-S", "-O", "-",
                                "http://[fe80::a9fe:a9fe%br410]/latest/meta-data/"],
                               capture_output=True, text=True, timeout=30)
    assert "403" in completed.stderr, (completed.returncode, completed.stdout, completed.stderr)
    ok(host, "metadata-down")
    ok(host, "net-down", vni=410)


def test_a_rule_set_nft_refuses_leaves_the_applied_one_in_place(hosts):
    """Rules go in with one `nft -f` (no separate `nft -c`): the kernel takes all or nothing."""
    host = hosts[1]
    spec = net_spec(411, "2001:db8:411:1::/64", host)
    ok(host, "net-up", **spec)
    applied = host.run(["nft", "-s", "list", "table", "bridge", "uncloud"]).stdout
    # A port file no verb writes (edited by hand, a damaged disk): nft refuses the rendered file.
    bogus = host.state_dir / "ports" / "ucbogus0.json"
    bogus.parent.mkdir(exist_ok=True)
    bogus.write_text(json.dumps({"tap": "ucbogus0", "vm_uuid": VM_C, "mac": "not-a-mac", "vni": 411,
                                 "ipv6": "2001:db8:411:1::1", "link_local": "fe80::1", "index": 0,
                                 "security_group_ingress": []}))
    try:
        error = fails(host, "net-up", {"state_dir": str(host.state_dir), **spec}, "command_failed")
        assert error["argv"][:2] == ["nft", "-f"]
        assert host.run(["nft", "-s", "list", "table", "bridge", "uncloud"]).stdout == applied
    finally:
        bogus.unlink()
    ok(host, "net-down", vni=411)
