"""What a proxy host's `proxy-sync` costs as names grow: the first sync (HAProxy starts), a change (one
name proven: check, swap, reload) and a sync that changes nothing, for 10, 1000 and 5000 names, beside
baselines measured in the same run: `haproxy -c` of the same config alone (the check every change pays),
the interpreter's bare start (`python3 -c pass` in the namespace) and the host program's own start
(an unknown verb, refused after its imports). A sync that changes nothing skips the check.

    sudo .venv/bin/python bench/proxy_sync.py [--names 10,1000,5000] [--runs 5]

Setup (not timed): a one-host lab (tests/lab); the host program is run in the host's namespace as the
control plane's SSH call runs it, without the SSH hop (`ip netns exec ... python3 program.pyz proxy-sync`).
Figures in ms (median of the runs); the lab and HAProxy are torn down at the end.
"""

import argparse
import ipaddress
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.hostside.build import build_zipapp  # noqa: E402
from tests.lab import Lab  # noqa: E402

PYTHON = "/usr/bin/python3"


def names(count: int, proven: int) -> list[dict]:
    base = int(ipaddress.IPv6Address("2001:db8:99::"))
    return [{"name": f"site{index}.example.test", "ipv6": str(ipaddress.IPv6Address(base + index + 1)),
             "serve": "all" if index < proven else "challenge"} for index in range(count)]


def timed(argv, input_text=None, check=True) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, input=input_text, capture_output=True, text=True, check=check)
    return (time.perf_counter() - start) * 1000, done.stdout


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--names", default="10,1000,5000")
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, Lab(Path(workdir), n_hosts=1) as lab:
        host = lab.hosts[0]
        program = Path(workdir) / "uncloud_hostside.pyz"
        program.write_bytes(build_zipapp())
        run = ["ip", "netns", "exec", host.netns, PYTHON, str(program)]

        def sync(entries, enabled=True):
            spec = {"state_dir": str(host.state_dir), "names": entries, "bind_ipv4": "127.0.0.1", "enabled": enabled}
            elapsed, out = timed([*run, "proxy-sync"], json.dumps(spec))
            answer = json.loads(out)
            assert answer["ok"], answer
            return elapsed, answer["result"]["changes"]

        bare = statistics.median(timed(["ip", "netns", "exec", host.netns, PYTHON, "-c", "pass"])[0]
                                 for _ in range(arguments.runs))
        program_start = statistics.median(timed([*run, "no-such-verb"], "{}", check=False)[0]
                                          for _ in range(arguments.runs))
        print(f"baselines: python3 start in the namespace {bare:.0f} ms, the host program's start and "
              f"refusal of an unknown verb {program_start:.0f} ms")
        print(f"{'names':>6} {'first':>8} {'change':>8} {'same':>8} {'haproxy -c':>11} {'config KiB':>11}")
        try:
            for count in (int(value) for value in arguments.names.split(",")):
                firsts, changes, sames, checks = [], [], [], []
                for _ in range(arguments.runs):
                    sync([], enabled=False)
                    elapsed, done = sync(names(count, 0))
                    assert "started haproxy" in done, done
                    firsts.append(elapsed)
                    elapsed, done = sync(names(count, 1))
                    assert done == ["reloaded haproxy"], done
                    changes.append(elapsed)
                    elapsed, done = sync(names(count, 1))
                    assert done == [], done
                    sames.append(elapsed)
                    config = host.state_dir / "proxy" / "haproxy.cfg"
                    checks.append(timed(["haproxy", "-c", "-q", "-f", str(config)])[0])
                print(f"{count:>6} {statistics.median(firsts):>8.0f} {statistics.median(changes):>8.0f} "
                      f"{statistics.median(sames):>8.0f} {statistics.median(checks):>11.0f} "
                      f"{config.stat().st_size / 1024:>11.0f}")
        finally:
            sync([], enabled=False)


if __name__ == "__main__":
    main()
