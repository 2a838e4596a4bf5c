"""The host's Prometheus exporter: metrics of the host and of its guests, served where the data is.

    exporter-up {"state_dir", "listen", "port", "token"?}   start it unless it runs (idempotent) -> {"pid", ...}
    exporter-down {"state_dir"}                    stop it
    python3 uncloud_hostside.pyz exporter STATE_DIR   the daemon itself (reads exporter.json)

It listens on the host's management address only (the control plane's network), answers GET
/metrics (with a token configured, only to `Authorization: Bearer <token>`: the site's scraper
token, which Prometheus already presents to the control plane), and reads everything at scrape time, cheaply: /proc for the qemu processes' CPU time and
memory, /proc/net/dev (this network namespace) for every tap at once, one `nft -j list table` for
all guard counters (read in the background when the last reading is older than GUARD_REFRESH_S:
it is the one slow part), and QMP query-blockstats per guest in parallel threads. Network counters are
named from the guest's point of view: a tap's transmit is what the guest receives.
"""

import concurrent.futures
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .checks import check_fields, check_int, check_ipv6_address, check_state_dir
from .errors import HostsideError, bad_spec
from .nft import NFT_FAMILY, NFT_TABLE, load_port_states
from .paths import exporter_paths, vm_paths, vms_dir
from .program import program_path
from .qmp import qmp_execute
from .state import (
    ensure_directory,
    process_cmdline,
    process_is_alive,
    process_stat_fields,
    read_json_file,
    read_pid_file,
    stop_process,
    write_json_file,
)
from .system import find_binary

QMP_TIMEOUT_S = 1.0
# `nft -j list table` of a host with 50 guests takes ~0.2 s: a scrape takes the last reading of the
# guard counters and, when it is older than this, has a fresh one read in the background (drop
# counters move slowly).
GUARD_REFRESH_S = 10.0
QMP_THREADS = 16
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# --- reading ---------------------------------------------------------------------------------------

def running_guests(state_dir):
    """{vm uuid: qemu pid} of the guests that run (their pid file names a live qemu of this VM)."""
    directory = vms_dir(state_dir)
    guests = {}
    for name in os.listdir(directory) if os.path.isdir(directory) else ():
        paths = vm_paths(state_dir, name)
        pid = read_pid_file(paths["pid"])
        if pid is not None and process_is_alive(pid) and paths["qmp"] in " ".join(process_cmdline(pid)):
            guests[name] = (pid, paths["qmp"])
    return guests


def process_cpu_and_memory(pid):
    """(CPU seconds user+system, resident bytes) of a process, from one read of /proc/PID/stat."""
    fields = process_stat_fields(pid)
    if fields is None:
        return None
    # After the command name: state is field 0, utime 11, stime 12, rss (pages) 21.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, int(fields[21]) * PAGE_SIZE


def interface_counters(path="/proc/net/dev"):
    """{interface: {rx_bytes, rx_packets, rx_drop, tx_bytes, tx_packets, tx_drop}} of this namespace."""
    counters = {}
    with open(path) as handle:
        for line in handle.readlines()[2:]:
            name, _, numbers = line.partition(":")
            values = numbers.split()
            if len(values) < 16:
                continue
            counters[name.strip()] = {"rx_bytes": int(values[0]), "rx_packets": int(values[1]),
                                      "rx_drop": int(values[3]), "tx_bytes": int(values[8]),
                                      "tx_packets": int(values[9]), "tx_drop": int(values[11])}
    return counters


def guard_counters(nft_json):
    """{(tap, reason): (packets, bytes)} of the guard rules' counters in `nft -j list table` output."""
    counters = {}
    for item in nft_json.get("nftables", []):
        rule = item.get("rule")
        if not rule or not rule.get("chain", "").startswith(("guard_", "multicast_")):
            continue
        counter = next((expression["counter"] for expression in rule.get("expr", []) if "counter" in expression), None)
        if counter is None:
            continue
        chain = rule["chain"]
        tap = chain.split("_", 1)[1]
        reason = rule.get("comment") or "unnamed"
        if chain.startswith("multicast_"):
            reason = f"multicast-{reason}"
        packets, size = counters.get((tap, reason), (0, 0))
        counters[(tap, reason)] = (packets + counter.get("packets", 0), size + counter.get("bytes", 0))
    return counters


def read_guard_counters():
    nft = find_binary("nft")
    if nft is None:
        return {}
    completed = subprocess.run([nft, "-j", "list", "table", NFT_FAMILY, NFT_TABLE], capture_output=True,
                               text=True, timeout=5, check=False)
    if completed.returncode != 0:
        return {}
    try:
        return guard_counters(json.loads(completed.stdout))
    except ValueError:
        return {}


def block_stats(qmp_socket):
    """[(device, read bytes, write bytes, read ops, write ops)] from QMP query-blockstats."""
    rows = []
    for entry in qmp_execute(qmp_socket, "query-blockstats", timeout_s=QMP_TIMEOUT_S):
        stats = entry.get("stats", {})
        device = entry.get("qdev") or entry.get("device") or entry.get("node-name") or "unknown"
        rows.append((device.rsplit("/", 1)[0] if device.endswith("/virtio-backend") else device,
                     stats.get("rd_bytes", 0), stats.get("wr_bytes", 0),
                     stats.get("rd_operations", 0), stats.get("wr_operations", 0)))
    return rows


def host_memory(path="/proc/meminfo"):
    values = {}
    with open(path) as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                values[key] = int(rest.split()[0]) * 1024
    return values


# --- rendering -------------------------------------------------------------------------------------

def _label_value(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Families:
    """Prometheus text format, each family written once with its HELP and TYPE."""

    def __init__(self):
        self.order, self.samples, self.heads = [], {}, {}

    def add(self, name, kind, documentation, value, **labels):
        if name not in self.heads:
            self.order.append(name)
            self.heads[name] = f"# HELP {name} {documentation}\n# TYPE {name} {kind}\n"
            self.samples[name] = []
        rendered = ",".join(f'{key}="{_label_value(item)}"' for key, item in labels.items())
        self.samples[name].append(f"{name}{{{rendered}}} {value}\n" if rendered else f"{name} {value}\n")

    def text(self):
        return "".join(self.heads[name] + "".join(self.samples[name]) for name in self.order)


class GuardCounterReader:
    """The guard counters for scrapes that must not wait for nft: a scrape gets the last reading and,
    when that is older than interval_s, starts a fresh one in the background. Nobody scraping costs
    nothing (no timer)."""

    def __init__(self, interval_s=GUARD_REFRESH_S):
        self.interval_s, self.counters, self.read_at = interval_s, {}, None
        self.lock, self.refreshing = threading.Lock(), False

    def refresh(self):
        counters = read_guard_counters()
        with self.lock:
            self.counters, self.read_at, self.refreshing = counters, time.monotonic(), False

    def start(self):
        self.refresh()  # the first reading, before the first scrape
        return self

    def latest(self):
        with self.lock:
            stale = self.read_at is None or time.monotonic() - self.read_at > self.interval_s
            begin = stale and not self.refreshing
            if begin:
                self.refreshing = True
        if begin:
            threading.Thread(target=self.refresh, daemon=True).start()
        with self.lock:
            return self.counters, (time.monotonic() - self.read_at if self.read_at is not None else None)


def collect(state_dir, qmp_pool=None, guard_reader=None):
    """The exporter's whole answer (text format 0.0.4). Without a guard_reader the guard counters
    are read now (tests, one-off calls)."""
    started = time.monotonic()
    families = Families()
    guests = running_guests(state_dir)
    ports = [port for port in load_port_states(state_dir) if port.get("vm_uuid") in guests]
    interfaces = interface_counters()
    guards, guards_age = guard_reader.latest() if guard_reader is not None else (read_guard_counters(), 0.0)

    def blocks(item):
        vm, (_, socket_path) = item
        try:
            return vm, block_stats(socket_path)
        except HostsideError:
            return vm, None

    if qmp_pool is not None:
        block_rows = dict(qmp_pool.map(blocks, guests.items()))
    else:
        block_rows = dict(map(blocks, guests.items()))

    families.add("uncloud_host_vms_running", "gauge", "Guests whose qemu runs", len(guests))
    for vm, (pid, _) in sorted(guests.items()):
        usage = process_cpu_and_memory(pid)
        if usage is None:
            continue
        families.add("uncloud_vm_cpu_seconds_total", "counter", "CPU time of the guest's qemu (user + system)",
                     f"{usage[0]:.2f}", vm=vm)
        families.add("uncloud_vm_memory_rss_bytes", "gauge", "Resident memory of the guest's qemu", usage[1], vm=vm)
    for vm, rows in sorted(block_rows.items()):
        if rows is None:
            families.add("uncloud_vm_qmp_errors", "gauge", "1 when the guest's QMP did not answer this scrape",
                         1, vm=vm)
            continue
        for device, read_bytes, write_bytes, read_ops, write_ops in rows:
            for name, value, documentation in (
                    ("uncloud_vm_disk_read_bytes_total", read_bytes, "Bytes the guest read from a disk"),
                    ("uncloud_vm_disk_write_bytes_total", write_bytes, "Bytes the guest wrote to a disk"),
                    ("uncloud_vm_disk_read_ops_total", read_ops, "Read requests of the guest on a disk"),
                    ("uncloud_vm_disk_write_ops_total", write_ops, "Write requests of the guest on a disk")):
                families.add(name, "counter", documentation, value, vm=vm, device=device)
    guest_view = (("receive_bytes", "tx_bytes", "Bytes the guest received on this port"),
                  ("transmit_bytes", "rx_bytes", "Bytes the guest sent on this port"),
                  ("receive_packets", "tx_packets", "Packets the guest received on this port"),
                  ("transmit_packets", "rx_packets", "Packets the guest sent on this port"),
                  ("receive_drops", "tx_drop", "Packets for the guest the host dropped (tap queue full)"),
                  ("transmit_drops", "rx_drop", "Packets from the guest the host's tap dropped"))
    for port in sorted(ports, key=lambda port: port["tap"]):
        counters = interfaces.get(port["tap"])
        if counters is None:
            continue
        for suffix, key, documentation in guest_view:
            families.add(f"uncloud_vm_network_{suffix}_total", "counter", documentation, counters[key],
                         vm=port["vm_uuid"], tap=port["tap"], mac=port.get("mac", ""))
    taps = {port["tap"]: port["vm_uuid"] for port in ports}
    for (tap, reason), (packets, size) in sorted(guards.items()):
        if tap not in taps:
            continue
        families.add("uncloud_vm_guard_dropped_packets_total", "counter",
                     "Frames from (or multicast to) the guest the anti-spoofing guard and its security "
                     "group dropped, by rule", packets, vm=taps[tap], tap=tap, reason=reason)
        families.add("uncloud_vm_guard_dropped_bytes_total", "counter", "Bytes of those frames", size,
                     vm=taps[tap], tap=tap, reason=reason)

    load1, load5, load15 = os.getloadavg()
    for period, value in (("1m", load1), ("5m", load5), ("15m", load15)):
        families.add("uncloud_host_load", "gauge", "Load average", value, period=period)
    memory = host_memory()
    families.add("uncloud_host_memory_total_bytes", "gauge", "Memory of the host", memory.get("MemTotal", 0))
    families.add("uncloud_host_memory_available_bytes", "gauge", "Memory available for new processes",
                 memory.get("MemAvailable", 0))
    disk = os.statvfs(state_dir)
    families.add("uncloud_host_disk_total_bytes", "gauge", "Size of the file system of the state directory",
                 disk.f_blocks * disk.f_frsize, path=state_dir)
    families.add("uncloud_host_disk_free_bytes", "gauge", "Free space for unprivileged writers there",
                 disk.f_bavail * disk.f_frsize, path=state_dir)
    if guards_age is not None:
        families.add("uncloud_exporter_guard_counters_age_seconds", "gauge",
                     "How old the guard counters in this answer are", f"{guards_age:.3f}")
    families.add("uncloud_exporter_scrape_seconds", "gauge", "How long this answer took to make",
                 f"{time.monotonic() - started:.6f}")
    return families.text()


# --- the daemon ------------------------------------------------------------------------------------

def serve_exporter(state_dir):
    """Run until SIGTERM: bind the configured address and answer GET /metrics."""
    paths = exporter_paths(state_dir)
    config = read_json_file(paths["spec"])
    if not config:
        print("exporter: no exporter.json", file=sys.stderr)
        return 1
    token = config.get("token") or ""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=QMP_THREADS)
    guard_reader = GuardCounterReader().start()
    lock = threading.Lock()  # one scrape at a time: two scrapers never double the QMP load

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the standard library's name)
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404, "only /metrics here")
                return
            if token and not hmac.compare_digest(self.headers.get("Authorization", "").encode(),
                                                 f"Bearer {token}".encode()):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Bearer realm="uncloud host exporter"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            with lock:
                try:
                    body = collect(state_dir, pool, guard_reader).encode()
                    status = 200
                except Exception as error:  # an answer that says why beats a dropped connection
                    body, status = f"exporter error: {type(error).__name__}: {error}\n".encode(), 500
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        address_family = __import__("socket").AF_INET6 if ":" in config["listen"] else __import__("socket").AF_INET
        daemon_threads = True

    server = Server((config["listen"], config["port"]), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    with open(paths["pid"], "w") as handle:
        handle.write(str(os.getpid()))
    server.serve_forever(poll_interval=0.5)
    return 0


def running_exporter(state_dir):
    pid = read_pid_file(exporter_paths(state_dir)["pid"])
    if pid is None or not process_is_alive(pid):
        return None
    return pid if process_cmdline(pid)[-2:] == ["exporter", state_dir] else None


def _wait_for_pid(state_dir, old_pid, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = running_exporter(state_dir)
        if pid is not None and pid != old_pid:
            return pid
        time.sleep(0.02)
    return None


def verb_exporter_up(spec):
    check_fields(spec, ["state_dir", "listen", "port"], ["token"])
    state_dir = check_state_dir(spec["state_dir"])
    listen = spec["listen"]
    if listen != "127.0.0.1":
        listen = str(check_ipv6_address(listen, "listen")) if ":" in str(listen) else None
    if listen is None:
        raise bad_spec("listen must be an IPv6 address or 127.0.0.1")
    port = check_int(spec["port"], "port", 1, 65535)
    token = spec.get("token") or ""
    if not isinstance(token, str) or len(token) > 512 or any(ord(char) < 33 or ord(char) > 126 for char in token):
        raise bad_spec("token must be at most 512 printable ASCII characters without spaces")
    paths = exporter_paths(state_dir)
    ensure_directory(paths["dir"])
    os.chmod(paths["dir"], 0o700)  # exporter.json holds the token
    wanted = {"listen": listen, "port": port, "token": token}
    shown = {"listen": listen, "port": port, "token_required": bool(token)}
    pid = running_exporter(state_dir)
    if pid is not None and read_json_file(paths["spec"]) == wanted:
        return {"pid": pid, "started": False, **shown}
    if pid is not None:
        stop_process(pid, term_wait_s=2)
    write_json_file(paths["spec"], wanted)
    with open(paths["log"], "a") as log:
        subprocess.Popen([sys.executable, "-I", "-S", program_path(), "exporter", state_dir],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                         start_new_session=True, close_fds=True)
    pid = _wait_for_pid(state_dir, pid)
    if pid is None:
        raise HostsideError("command_failed", f"the exporter did not start; see {paths['log']}")
    return {"pid": pid, "started": True, **shown}


def verb_exporter_down(spec):
    check_fields(spec, ["state_dir"])
    state_dir = check_state_dir(spec["state_dir"])
    pid = running_exporter(state_dir)
    if pid is not None:
        stop_process(pid, term_wait_s=2)
    return {"stopped": pid is not None}
