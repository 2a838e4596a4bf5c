"""How fast `uncloud --help` starts, beside the interpreter's own start (`python -c pass`) measured
in the same run, so the figure means the same on a loaded machine. Goal: --help <= 150 ms.

    .venv/bin/python bench/cli_startup.py [--runs 30]

Also shows which modules the CLI imports for --help (Django, httpx and yaml must not be among them).
"""

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall ms, CPU ms) of one run; CPU time (user + system of the child) suffers less from a busy machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, check=True)
    wall = (time.perf_counter() - start) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return wall, cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    python = sys.executable
    cases = {
        "python -c pass (baseline)": [python, "-c", "pass"],
        "uncloud --help": [python, "-m", "uncloud_cli", "--help"],
        "uncloud vms create --help": [python, "-m", "uncloud_cli", "vms", "create", "--help"],
        "python -c 'import httpx' (for scale)": [python, "-c", "import httpx"],
    }
    # Interleaved rounds: load on the machine hits every case alike.
    walls = {name: [] for name in cases}
    cpus = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, argv in cases.items():
            wall, cpu = timed(argv)
            walls[name].append(wall)
            cpus[name].append(cpu)
    baseline = statistics.median(walls["python -c pass (baseline)"])
    print(f"{'case':40} {'wall median ms':>15} {'wall p90':>9} {'minus baseline':>15} {'CPU median ms':>14}")
    for name, times in walls.items():
        median = statistics.median(times)
        p90 = sorted(times)[max(0, int(len(times) * 0.9) - 1)]
        print(f"{name:40} {median:15.1f} {p90:9.1f} {median - baseline:15.1f} {statistics.median(cpus[name]):14.1f}")
    loaded = subprocess.run([python, "-c", "import sys; sys.argv=['uncloud','--help']\n"
                             "from uncloud_cli import main\ntry: main.main()\nexcept SystemExit: pass\n"
                             "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
                             "('django','httpx','yaml','rest_framework','uncloud_cli'))), file=sys.stderr)"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stderr.strip()
    print(f"modules of ours and heavy ones imported by --help: {loaded}")


if __name__ == "__main__":
    main()
