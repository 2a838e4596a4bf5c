"""/128 routes to guests on other hosts, shared by the features that need them: a NAT64 pool's maps
(nat64.py) and the proxy with its jump host (proxy.py). One guest may be wanted by several of them at
once (a public IPv4 address mapped to it and a name behind the proxy, on the same host); a feature
that lets go of a guest must not take the route the other one still uses. So every feature's wanted
routes are recorded in one file, and a route is deleted only when no feature wants it any more.
Callers hold the host lock (every writer of this file does)."""

from .paths import guest_routes_path
from .state import read_json_file, write_json_file
from .system import run_command


def claim_guest_routes(state_dir, owner, wanted, previously, underlay_device, changes):
    """Make `owner`'s routes exactly `wanted` ([(address, via)], reached over `underlay_device`).
    `previously` is what the owner recorded last time ([address, ...]): the routes it may release.
    A released route stays while another owner wants it."""
    claims = read_json_file(guest_routes_path(state_dir)) or {}
    claims[owner] = sorted({address for address, _ in wanted})
    if not claims[owner]:
        del claims[owner]
    for address, via in wanted:
        run_command(["ip", "-6", "route", "replace", f"{address}/128", "via", via, "dev", underlay_device])
    wanted_by_anyone = {address for addresses in claims.values() for address in addresses}
    for address in sorted(set(previously) - wanted_by_anyone):
        # No device: the route may have been made over an underlay device since renamed, or by a disabled
        # proxy's spec that names none. Only these features make /128 routes.
        run_command(["ip", "-6", "route", "del", f"{address}/128"], check=False)
        changes.append(f"removed route {address}")
    write_json_file(guest_routes_path(state_dir), claims)
