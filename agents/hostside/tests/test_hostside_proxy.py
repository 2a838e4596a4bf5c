"""proxy-sync and jump-sync on a real lab host: HAProxy routes by Host header and by SNI (TLS passed
through: the client sees the backend's own certificate), a pending name serves its challenge path
only, and the jump sshd forwards a key only to its permitted guests' port 22. The "guests" are
addresses on the host's loopback, served by real servers (python http.server, openssl s_server,
socat)."""
import subprocess
import time

import pytest
from hostside_testlib import fails, ok

GUEST = "2001:db8:77::10"
OTHER_GUEST = "2001:db8:77::11"
HTTP_PORT, HTTPS_PORT, JUMP_PORT = 8080, 8443, 2222


def spawn(host, argv, cwd=None):
    return subprocess.Popen(["ip", "netns", "exec", host.netns, *argv], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def wait_until(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def guests(lone_host, tmp_path):
    """Two addresses on the host's loopback, with web, TLS and port-22 servers on the first."""
    host = lone_host
    for address in (GUEST, OTHER_GUEST):
        host.run(["ip", "-6", "addr", "add", f"{address}/128", "dev", "lo"])
    www = tmp_path / "www"
    (www / ".well-known" / "uncloud-challenge").mkdir(parents=True)
    (www / ".well-known" / "uncloud-challenge" / "tok").write_text("tok\n")
    (www / "index.html").write_text("guest-site\n")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ed25519", "-nodes", "-days", "2", "-subj",
                    "/CN=tls.example.test", "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True)
    servers = [
        spawn(host, ["/usr/bin/python3", "-m", "http.server", "--bind", GUEST, "80"], cwd=www),
        spawn(host, ["openssl", "s_server", "-accept", f"[{GUEST}]:443", "-cert", str(tmp_path / "cert.pem"),
                     "-key", str(tmp_path / "key.pem"), "-www", "-quiet"]),
        spawn(host, ["socat", f"TCP6-LISTEN:22,bind=[{GUEST}],reuseaddr,fork", "SYSTEM:echo GUEST-SSH-PORT"]),
    ]
    yield host
    for server in servers:
        server.kill()
        server.wait()
    ok(host, "proxy-sync", names=[], enabled=False)
    ok(host, "jump-sync", keys=[], enabled=False)
    for address in (GUEST, OTHER_GUEST):
        host.run(["ip", "-6", "addr", "del", f"{address}/128", "dev", "lo"], check=False)


def fetch(host, name, path="/"):
    completed = host.run(["curl", "-sS", "-m", "5", "-H", f"Host: {name}", f"http://127.0.0.1:{HTTP_PORT}{path}"],
                         check=False)
    return completed.stdout


def tls_subject(host, name):
    completed = host.run(["openssl", "s_client", "-connect", f"127.0.0.1:{HTTPS_PORT}", "-servername", name],
                         input="", timeout=15, check=False)
    return next((line for line in completed.stdout.splitlines() if line.startswith("subject=")), None)


def proxy_spec(names):
    return {"names": names, "bind_ipv4": "127.0.0.1", "http_port": HTTP_PORT, "https_port": HTTPS_PORT}


def test_proxy_routes_by_name_and_sni_and_serves_pending_names_their_challenge_only(guests):
    host = guests
    served = {"name": "www.example.test", "ipv6": GUEST, "serve": "all"}
    tls = {"name": "tls.example.test", "ipv6": GUEST, "serve": "all"}
    pending = {"name": "pending.example.test", "ipv6": GUEST, "serve": "challenge"}
    first = ok(host, "proxy-sync", **proxy_spec([served, tls, pending]))
    assert first["running"] and "started haproxy" in first["changes"]
    wait_until(lambda: fetch(host, "www.example.test") == "guest-site\n")
    assert fetch(host, "WWW.Example.test:8080") == "guest-site\n"  # Host header: case and port ignored
    assert fetch(host, "nobody.example.test") == "No site here by that name."
    assert fetch(host, "pending.example.test", "/.well-known/uncloud-challenge/tok") == "tok\n"
    assert fetch(host, "pending.example.test") == "No site here by that name."
    # TLS passes through: the certificate the client sees is the backend's own.
    assert tls_subject(host, "tls.example.test") == "subject=CN = tls.example.test"
    assert tls_subject(host, "pending.example.test") is None  # not proven: no TLS route at all

    again = ok(host, "proxy-sync", **proxy_spec([served, tls, pending]))
    assert again["changes"] == [] and again["pid"] == first["pid"]  # idempotent
    proven = ok(host, "proxy-sync", **proxy_spec([served, tls, {**pending, "serve": "all"}]))
    assert proven["changes"] == ["reloaded haproxy"] and proven["pid"] == first["pid"]
    wait_until(lambda: fetch(host, "pending.example.test") == "guest-site\n")
    ok(host, "proxy-sync", **proxy_spec([tls]))
    wait_until(lambda: fetch(host, "www.example.test") == "No site here by that name.")

    # Guests on other hosts are reached over the underlay; their routes go when they leave the spec.
    routed = {"routes": [{"ipv6": "2001:db8:78::5", "via": "fd00:1::2"}], "underlay_device": host.underlay_device}
    ok(host, "proxy-sync", **proxy_spec([tls]), **routed)
    assert "via fd00:1::2" in host.run(["ip", "-6", "route", "show", "2001:db8:78::5/128"]).stdout
    assert "removed route 2001:db8:78::5" in ok(host, "proxy-sync", **proxy_spec([tls]))["changes"]
    assert host.run(["ip", "-6", "route", "show", "2001:db8:78::5/128"]).stdout == ""


PROXY_V2_SIGNATURE = bytes.fromhex("0d0a0d0a000d0a515549540a")


def test_proxy_protocol_is_sent_to_a_guest_that_asked_for_it(guests, tmp_path):
    host = guests
    received = tmp_path / "received"
    listener = spawn(host, ["socat", "-u", f"TCP6-LISTEN:80,bind=[{OTHER_GUEST}],reuseaddr",
                            f"CREATE:{received}"])
    try:
        ok(host, "proxy-sync", **proxy_spec([{"name": "pp.example.test", "ipv6": OTHER_GUEST, "serve": "all",
                                              "proxy_protocol": True}]))
        wait_until(lambda: fetch(host, "pp.example.test") is not None and received.exists()
                   and received.read_bytes().startswith(PROXY_V2_SIGNATURE))
        data = received.read_bytes()
        # v2, PROXY command, TCP over IPv4 (0x21 0x11), 12 address bytes: the visitor's address first.
        assert data[12:20] == bytes([0x21, 0x11, 0, 12, 127, 0, 0, 1])
        assert b"host: pp.example.test" in data  # the request follows the header
    finally:
        listener.kill()
        listener.wait()


@pytest.mark.parametrize("entry", [
    {"name": "a.example.test\n    bind :1", "ipv6": GUEST, "serve": "all"},
    {"name": "a b.test", "ipv6": GUEST, "serve": "all"},
    {"name": "localhost", "ipv6": GUEST, "serve": "all"},
    {"name": "a.example.test", "ipv6": "192.0.2.1", "serve": "all"},
    {"name": "a.example.test", "ipv6": GUEST, "serve": "everything"},
])
def test_proxy_refuses_bad_names_before_touching_anything(lone_host, entry):
    config = lone_host.state_dir / "proxy" / "haproxy.cfg"
    before = config.read_text() if config.exists() else None
    fails(lone_host, "proxy-sync", {"state_dir": str(lone_host.state_dir), **proxy_spec([entry])}, "bad_spec")
    assert (config.read_text() if config.exists() else None) == before


def jump(host, key_path, target):
    return host.run(["ssh", "-i", str(key_path), "-p", str(JUMP_PORT), "-o", "StrictHostKeyChecking=no",
                     "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                     "-W", f"[{target}]:22", "nobody@127.0.0.1"], input="", timeout=20, check=False)


def test_jump_forwards_a_key_to_its_guests_port_22_only(guests, tmp_path):
    host = guests
    key = tmp_path / "customer"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = (tmp_path / "customer.pub").read_text().strip()
    spec = {"keys": [{"key": public, "permit": [GUEST]}], "listen": ["127.0.0.1"], "port": JUMP_PORT,
            "user": "nobody", "strict_modes": False}
    answer = ok(host, "jump-sync", **spec)
    assert answer["running"] and answer["keys"] == 1 and answer["host_key"].startswith("ssh-ed25519 ")
    reached = jump(host, key, GUEST)
    assert "GUEST-SSH-PORT" in reached.stdout, reached.stderr
    refused = jump(host, key, OTHER_GUEST)
    assert "GUEST-SSH-PORT" not in refused.stdout and "prohibited" in refused.stderr, refused.stderr
    shell = host.run(["ssh", "-i", str(key), "-p", str(JUMP_PORT), "-o", "StrictHostKeyChecking=no",
                      "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "nobody@127.0.0.1", "id"],
                     timeout=20, check=False)
    assert "uid=" not in shell.stdout  # no commands, no shell
    assert ok(host, "jump-sync", **spec)["changes"] == []
    ok(host, "jump-sync", **{**spec, "keys": [{"key": public, "permit": [OTHER_GUEST]}]})
    assert "GUEST-SSH-PORT" not in jump(host, key, GUEST).stdout  # the keys file is read at each login


@pytest.mark.parametrize("key", [
    'command="/bin/sh" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE',
    "ssh-ed25519 AAAA\nssh-ed25519 BBBB",
    "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
])
def test_jump_refuses_keys_that_are_not_plain_public_keys(lone_host, key):
    fails(lone_host, "jump-sync", {"state_dir": str(lone_host.state_dir), "user": "nobody",
                                   "keys": [{"key": key, "permit": [GUEST]}]}, "bad_spec")


def guest_route(host, address):
    return host.run(["ip", "-6", "route", "show", f"{address}/128"]).stdout


def test_a_guest_route_stays_while_nat64_or_the_proxy_still_wants_it(lone_host):
    """One guest with a public IPv4 address (NAT64) and a name behind the proxy, both on this host:
    whichever lets go first must leave the route the other one uses."""
    host = lone_host
    guest, via = "2001:db8:79::7", "fd00:1::2"
    pool = {"id": 7, "prefix": "192.0.2.0/29", "nat64_prefix": "fd00:64:7::/96", "translator_address": "198.51.100.7",
            "maps": [{"ipv4": "192.0.2.1", "ipv6": guest, "via": via}]}
    proxy_routes = {"routes": [{"ipv6": guest, "via": via}], "underlay_device": host.underlay_device}
    name = {"name": "both.example.test", "ipv6": guest, "serve": "all"}
    try:
        ok(host, "nat64-sync", underlay_device=host.underlay_device, pools=[pool])
        ok(host, "proxy-sync", **proxy_spec([name]), **proxy_routes)
        assert f"via {via}" in guest_route(host, guest)

        released = ok(host, "nat64-sync", underlay_device=host.underlay_device, pools=[{**pool, "maps": []}])
        assert f"removed route {guest}" not in released["changes"]
        assert f"via {via}" in guest_route(host, guest)  # the proxy still reaches it

        ok(host, "nat64-sync", underlay_device=host.underlay_device, pools=[pool])
        unnamed = ok(host, "proxy-sync", **proxy_spec([]), underlay_device=host.underlay_device)
        assert f"removed route {guest}" not in unnamed["changes"]
        assert f"via {via}" in guest_route(host, guest)  # NAT64 still maps it

        gone = ok(host, "nat64-sync", underlay_device=host.underlay_device, pools=[])
        assert f"removed route {guest}" in gone["changes"]
        assert guest_route(host, guest) == ""
    finally:
        ok(host, "nat64-sync", underlay_device=host.underlay_device, pools=[])
        ok(host, "proxy-sync", names=[], enabled=False)
