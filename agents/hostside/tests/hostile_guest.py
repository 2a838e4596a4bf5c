"""A hostile guest on a port the product made: a namespace wired to a VM's tap (guest_wire.py).

The namespace has a whole network stack (its kernel speaks ND, TCP, ping as a guest's would) and
scapy from Debian's python3-scapy, run with /usr/bin/python3 inside the namespace, writes any frame
an attacker with root in a guest could write. Everything it starts is stopped by its pid, and the
namespace it made is deleted, in close().
"""
import json
import secrets
import subprocess
import time
from pathlib import Path

from hostside_testlib import PYTHON, link_local

GUEST_WIRE = Path(__file__).resolve().parent / "guest_wire.py"
SCAPY_PROLOGUE = "import sys\nfrom scapy.all import *\nconf.verb = 0\n"


def router_link_local(vni):
    return str(link_local(f"02:75:63:{vni >> 16 & 0xff:02x}:{vni >> 8 & 0xff:02x}:{vni & 0xff:02x}"))


class HostileGuest:
    def __init__(self, host, tap, mac, address, vni):
        self.host, self.tap, self.mac, self.address = host, tap, mac, address
        self.link_local = str(link_local(mac))
        self.netns = f"ucevil{secrets.token_hex(3)}"
        self.processes = []
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        self.wire = self.start(["ip", "netns", "exec", host.netns, PYTHON, str(GUEST_WIRE), tap, self.netns])
        line = self.wire.stdout.readline()
        assert line.strip() == "ready", (line, self.wire.stderr.read())
        self.ip("link", "set", "lo", "up")
        self.sysctl("net.ipv6.conf.eth0.accept_dad", "0")
        self.ip("link", "set", "eth0", "address", mac)
        self.ip("-6", "addr", "add", f"{address}/64", "dev", "eth0", "nodad")
        self.ip("link", "set", "eth0", "up")
        self.ip("-6", "route", "add", "default", "via", router_link_local(vni), "dev", "eth0")
        deadline = time.monotonic() + 10
        while host.run(["cat", f"/sys/class/net/{tap}/brport/state"]).stdout.strip() != "3":
            assert time.monotonic() < deadline, f"bridge port {tap} does not forward"
            time.sleep(0.05)

    def start(self, argv, **options):
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, **options)
        self.processes.append(process)
        return process

    def run(self, argv, timeout=60, check=True, input=None):
        completed = subprocess.run(["ip", "netns", "exec", self.netns, *argv], capture_output=True,
                                   text=True, timeout=timeout, input=input)
        assert not check or completed.returncode == 0, completed
        return completed

    def ip(self, *args):
        self.run(["ip", *args])

    def sysctl(self, key, value):
        self.run(["sysctl", "-qw", f"{key}={value}"])

    def python(self, script, timeout=60):
        """Run a script with Debian's python3 (and its scapy) inside the guest; its stdout."""
        return self.run([PYTHON, "-c", script], timeout=timeout).stdout

    def send(self, *expressions):
        """Write frames on the guest's NIC, each given as a scapy expression (which may also make a
        list of frames, like fragment6). Returns the bytes of every frame written, in order."""
        script = SCAPY_PROLOGUE + "for expression in sys.argv[1:]:\n" \
            "    made = eval(expression)\n" \
            "    for frame in (made if isinstance(made, list) else [made]):\n" \
            "        sendp(frame, iface='eth0')\n" \
            "        print(bytes(frame).hex())\n"
        output = self.run([PYTHON, "-c", script, *expressions]).stdout
        return [bytes.fromhex(line) for line in output.split()]

    def sniff(self, seconds):
        """Start capturing what arrives on the guest's NIC; received(process) gives the frames."""
        script = SCAPY_PROLOGUE + (
            "sniff(iface='eth0', timeout=float(sys.argv[1]), store=False,\n"
            "      started_callback=lambda: print('ready', flush=True),\n"
            "      prn=lambda frame: print('rx', bytes(frame).hex(), flush=True))\n")
        process = self.start(["ip", "netns", "exec", self.netns, PYTHON, "-c", script, str(seconds)])
        line = process.stdout.readline()
        assert line.strip() == "ready", (line, process.stderr.read())
        return process

    def close(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.communicate()
        subprocess.run(["ip", "netns", "del", self.netns], check=False)


def sniffed(process):
    output, errors = process.communicate(timeout=60)
    return [bytes.fromhex(line.split()[1]) for line in output.splitlines() if line.startswith("rx ")]


def connect_results(guest, targets, timeout_s=2.0):
    """{"[address]:port": "open" | "refused" | "timeout" | error} of TCP connects from the guest."""
    script = (
        "import json, socket, sys, threading\n"
        "targets, timeout = json.loads(sys.argv[1]), float(sys.argv[2])\n"
        "results = {}\n"
        "def probe(address, port):\n"
        "    key = f'[{address}]:{port}'\n"
        "    try:\n"
        "        with socket.create_connection((address, port), timeout=timeout):\n"
        "            results[key] = 'open'\n"
        "    except ConnectionRefusedError:\n"
        "        results[key] = 'refused'\n"
        "    except (socket.timeout, TimeoutError):\n"
        "        results[key] = 'timeout'\n"
        "    except OSError as error:\n"
        "        results[key] = str(error)\n"
        "threads = [threading.Thread(target=probe, args=(a, p)) for a, p in targets]\n"
        "[thread.start() for thread in threads]\n"
        "[thread.join() for thread in threads]\n"
        "print(json.dumps(results))\n")
    return json.loads(guest.run([PYTHON, "-c", script, json.dumps(targets), str(timeout_s)]).stdout)


def scapy_frames(*expressions):
    """The bytes of frames made by scapy expressions, for tap_io to send (nothing is sent here)."""
    script = SCAPY_PROLOGUE + "for expression in sys.argv[1:]:\n" \
        "    made = eval(expression)\n" \
        "    for frame in (made if isinstance(made, list) else [made]):\n" \
        "        print(bytes(frame).hex())\n"
    output = subprocess.run([PYTHON, "-c", script, *expressions], capture_output=True, text=True,
                            check=True, timeout=60).stdout
    return [bytes.fromhex(line) for line in output.split()]
