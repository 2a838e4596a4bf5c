"""proxy-sync: the shared IPv4 HTTP(S) proxy of a proxy host (Debian's HAProxy).

IPv4 visitors reach IPv6-only guests by name: port 80 is routed by the Host header, port 443 by the
TLS SNI of the client hello, passed through untouched (the guest holds its own certificate). A name
whose proof is pending is routed for its challenge path only. The config is rendered whole from the
spec, checked with `haproxy -c`, swapped in atomically and loaded by the master process (master-worker
mode: SIGUSR2 starts new workers, old ones finish their connections).
"""

import ipaddress
import os
import pwd
import signal

from .checks import (
    check_bool,
    check_domain,
    check_fields,
    check_int,
    check_interface_name,
    check_ipv6_address,
    check_list,
    check_state_dir,
)
from .errors import bad_spec
from .guest_routes import claim_guest_routes
from .paths import proxy_paths
from .state import (
    ensure_directory,
    host_lock,
    owned_process,
    read_json_file,
    read_text,
    remove_file,
    send_signal,
    stop_process,
    wait_for_owned_process,
    write_file_atomically,
    write_json_file,
)
from .system import require_binaries, run_command

MAX_NAMES = 10000
CHALLENGE_PATH = "/.well-known/uncloud-challenge/"
SERVE_ALL, SERVE_CHALLENGE = "all", "challenge"


def parse_name(entry, field):
    check_fields(entry, ["name", "ipv6", "serve"], ["proxy_protocol"])
    name = check_domain(entry["name"], f"{field}.name")
    if "." not in name:
        raise bad_spec(f"{field}.name must have at least two labels")
    if entry["serve"] not in (SERVE_ALL, SERVE_CHALLENGE):
        raise bad_spec(f"{field}.serve must be {SERVE_ALL!r} or {SERVE_CHALLENGE!r}")
    return {"name": name, "ipv6": str(check_ipv6_address(entry["ipv6"], f"{field}.ipv6")), "serve": entry["serve"],
            "proxy_protocol": check_bool(entry.get("proxy_protocol", False), f"{field}.proxy_protocol")}


def parse_route(entry, field):
    check_fields(entry, ["ipv6", "via"])
    return (str(check_ipv6_address(entry["ipv6"], f"{field}.ipv6")), str(check_ipv6_address(entry["via"], f"{field}.via")))


def parse_proxy_spec(spec):
    check_fields(spec, ["state_dir", "names"],
                 ["routes", "underlay_device", "bind_ipv4", "http_port", "https_port", "enabled"])
    try:
        bind = ipaddress.IPv4Address(spec.get("bind_ipv4", "0.0.0.0"))
    except (ValueError, TypeError):
        raise bad_spec("bind_ipv4 must be an IPv4 address") from None
    names = [parse_name(entry, f"names[{index}]")
             for index, entry in enumerate(check_list(spec["names"], "names", MAX_NAMES))]
    seen = [entry["name"] for entry in names]
    if len(set(seen)) != len(seen):
        raise bad_spec("names: a name appears twice")
    http_port = check_int(spec.get("http_port", 80), "http_port", 1, 65535)
    https_port = check_int(spec.get("https_port", 443), "https_port", 1, 65535)
    if http_port == https_port:
        raise bad_spec("http_port and https_port must differ")
    routes = sorted({parse_route(entry, f"routes[{index}]")
                     for index, entry in enumerate(check_list(spec.get("routes", []), "routes", MAX_NAMES))})
    if len({address for address, _ in routes}) != len(routes):
        raise bad_spec("routes: an address appears twice")
    underlay = spec.get("underlay_device")
    if routes and underlay is None:
        raise bad_spec("underlay_device is needed to route to guests on other hosts")
    return {"state_dir": check_state_dir(spec["state_dir"]), "names": names, "routes": routes, "bind_ipv4": str(bind),
            "http_port": http_port, "https_port": https_port,
            "underlay_device": None if underlay is None else check_interface_name(underlay, "underlay_device"),
            "enabled": check_bool(spec.get("enabled", True), "enabled")}


def has_user(name):
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def render_haproxy_config(proxy):
    """The whole config. Names are checked letters, digits, dots and hyphens, so they are safe as
    HAProxy words and backend names."""
    bind = proxy["bind_ipv4"]
    lines = [
        "# Written by the uncloud host program (proxy-sync); changes here are overwritten.",
        "global",
        # Two file descriptors per connection; 4000 fits the usual 20000-descriptor service limit.
        "    maxconn 4000",
        *(["    user haproxy", "    group haproxy"] if has_user("haproxy") else []),
        "defaults",
        "    timeout connect 5s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-request 10s",
        "    timeout tunnel 1h",
        "",
        "frontend http_by_name",
        "    mode http",
        f"    bind ipv4@{bind}:{proxy['http_port']}",
        "    option forwardfor",
        "    http-request set-var(txn.host) req.hdr(host),field(1,:),lower",
    ]
    for entry in proxy["names"]:
        condition = f"{{ var(txn.host) -m str {entry['name']} }}"
        if entry["serve"] == SERVE_CHALLENGE:
            condition += f" {{ path_beg {CHALLENGE_PATH} }}"
        lines.append(f"    use_backend http_{entry['name']} if {condition}")
    lines += ["    default_backend unknown_name", "",
              "backend unknown_name",
              "    mode http",
              '    http-request return status 404 content-type text/plain string "No site here by that name."',
              "",
              "frontend https_by_sni",
              "    mode tcp",
              f"    bind ipv4@{bind}:{proxy['https_port']}",
              "    tcp-request inspect-delay 5s",
              "    tcp-request content accept if { req.ssl_hello_type 1 }"]
    served = [entry for entry in proxy["names"] if entry["serve"] == SERVE_ALL]
    lines += [f"    use_backend tls_{entry['name']} if {{ req.ssl_sni -m str {entry['name']} }}" for entry in served]
    for entry in proxy["names"]:
        proxy_protocol = " send-proxy-v2" if entry["proxy_protocol"] else ""
        lines += ["", f"backend http_{entry['name']}", "    mode http",
                  f"    server guest [{entry['ipv6']}]:80{proxy_protocol}"]
    for entry in served:
        proxy_protocol = " send-proxy-v2" if entry["proxy_protocol"] else ""
        lines += ["", f"backend tls_{entry['name']}", "    mode tcp",
                  f"    server guest [{entry['ipv6']}]:443{proxy_protocol}"]
    return "\n".join(lines) + "\n"


def sync_routes(state_dir, paths, wanted, underlay_device, changes):
    """/128 routes to guests on other hosts (over the underlay): the named guests and the jump host's
    targets. Shared with NAT64's (guest_routes.py)."""
    recorded = (read_json_file(paths["state"]) or {}).get("routes", [])
    claim_guest_routes(state_dir, "proxy", wanted, [entry[0] for entry in recorded], underlay_device, changes)
    return [[address, via, underlay_device] for address, via in wanted]


def load_config(paths, config, changes):
    """Check the candidate, swap it in, and start or reload HAProxy. A config that fails the check
    never replaces the running one. The same config on a running HAProxy costs nothing (the beat's
    re-sync of an idle host)."""
    unchanged = read_text(paths["config"]) == config
    pid = owned_process(paths["pid"], paths["config"])
    if unchanged and pid is not None:
        return pid
    write_file_atomically(paths["candidate"], config)
    run_command(["haproxy", "-c", "-q", "-f", paths["candidate"]])
    os.replace(paths["candidate"], paths["config"])
    if pid is None:
        remove_file(paths["pid"])
        run_command(["haproxy", "-W", "-D", "-f", paths["config"], "-p", paths["pid"]])
        pid = wait_for_owned_process(paths["pid"], paths["config"], "haproxy")
        changes.append("started haproxy")
    elif not unchanged:
        send_signal(pid, signal.SIGUSR2)  # the master re-reads the file and replaces its workers
        changes.append("reloaded haproxy")
    return pid


def stop_proxy(paths, changes):
    pid = owned_process(paths["pid"], paths["config"])
    if pid is not None:
        stop_process(pid)
        changes.append("stopped haproxy")
    remove_file(paths["pid"])


def verb_proxy_sync(spec):
    """Make this host's proxy serve exactly the given names (the whole desired state), or stop it
    (enabled: false). Run on a designated proxy host."""
    proxy = parse_proxy_spec(spec)
    paths = proxy_paths(proxy["state_dir"])
    changes = []
    with host_lock(proxy["state_dir"]):
        ensure_directory(paths["dir"])
        if not proxy["enabled"]:
            stop_proxy(paths, changes)
            routes = sync_routes(proxy["state_dir"], paths, [], proxy["underlay_device"], changes)
            write_json_file(paths["state"], {"routes": routes, "names": []})
            return {"running": False, "names": 0, "changes": changes}
        require_binaries("haproxy", "ip")
        config = render_haproxy_config(proxy)
        routes = sync_routes(proxy["state_dir"], paths, proxy["routes"], proxy["underlay_device"], changes)
        pid = load_config(paths, config, changes)
        write_json_file(paths["state"], {"routes": routes, "names": [entry["name"] for entry in proxy["names"]]})
    return {"running": True, "pid": pid, "names": len(proxy["names"]),
            "served": sum(entry["serve"] == SERVE_ALL for entry in proxy["names"]), "changes": changes}
