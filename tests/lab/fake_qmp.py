"""Stand-in qemu processes for the exporter's unit test and bench/metrics.py: one Python process
that answers QMP (greeting, qmp_capabilities, query-blockstats) on the sockets of many VM
directories and names them all on its command line, as a qemu names its own socket.

Why not real qemu: 50 TCG guests do not fit on a 2-core machine beside the rest of the suite; what
the exporter does per guest (read /proc/PID/stat, one QMP round trip, /proc/net/dev) is the same
against this process. The lab test (observability/tests/test_prometheus_lab.py) runs the exporter
against real qemu guests."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

SERVER = r'''
import json, os, socket, sys, threading
READ, WRITTEN = 123 * 4096, 45 * 4096

def answer(connection):
    with connection:
        connection.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\n')
        reader = connection.makefile("rb")
        for line in reader:
            command = json.loads(line).get("execute")
            if command == "query-blockstats":
                stats = {"rd_bytes": READ, "wr_bytes": WRITTEN, "rd_operations": 123, "wr_operations": 45}
                reply = {"return": [{"device": "", "qdev": "/machine/peripheral/disk0/virtio-backend",
                                     "stats": stats}]}
            else:
                reply = {"return": {}}
            connection.sendall(json.dumps(reply).encode() + b"\n")

def serve(path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=answer, args=(connection,), daemon=True).start()

for path in sys.argv[1:]:
    threading.Thread(target=serve, args=(path,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
'''
READ_BYTES, WRITTEN_BYTES = 123 * 4096, 45 * 4096


def start_fake_guests(state_dir: Path, vm_uuids: list[str]) -> subprocess.Popen:
    """One process answering QMP for every VM; each VM directory gets its qemu.pid."""
    sockets = []
    for vm in vm_uuids:
        directory = state_dir / "vms" / vm
        directory.mkdir(parents=True, exist_ok=True)
        sockets.append(str(directory / "qmp.sock"))
    process = subprocess.Popen([sys.executable, "-c", SERVER, *sockets], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 10
    while not all(os.path.exists(path) for path in sockets) and time.monotonic() < deadline:
        time.sleep(0.01)
    for vm in vm_uuids:
        (state_dir / "vms" / vm / "qemu.pid").write_text(str(process.pid))
    return process


def write_port(state_dir: Path, vm_uuid: str, tap: str, mac: str = "02:00:00:00:00:01") -> None:
    ports = state_dir / "ports"
    ports.mkdir(parents=True, exist_ok=True)
    (ports / f"{tap}.json").write_text(json.dumps({"tap": tap, "vm_uuid": vm_uuid, "mac": mac, "vni": 1000}))


def stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait(timeout=10)
