#!/usr/bin/python3
"""Run one host-side verb with every external command timed, without changing the program.

    ip netns exec NS /usr/bin/python3 bench/profile_hostside.py PROGRAM VERB < spec.json

PROGRAM is the host-side program's zipapp (agents/hostside/build.py builds it; the control plane
ships it as <state_dir>/bin/uncloud_hostside-<sha>.pyz). The verb's JSON answer goes
to stdout as usual; stderr gets one line per command (milliseconds, argv) and the total, so
bench/vm_up.py --profile can show where vm-up spends its time beyond qemu itself.
"""
import importlib
import json
import subprocess
import sys
import time

started = time.perf_counter()
program_path, verb = sys.argv[1], sys.argv[2]
sys.path.insert(0, program_path)  # a zipapp is importable like a directory
hostside = importlib.import_module("uncloud_hostside.__main__")
imported = time.perf_counter()

command_times = []
real_run = subprocess.run


def timed_run(argv, *args, **kwargs):
    command_started = time.perf_counter()
    try:
        return real_run(argv, *args, **kwargs)
    finally:
        command_times.append((time.perf_counter() - command_started, argv))


# Every module of the host-side program calls subprocess.run through the one subprocess module.
subprocess.run = timed_run
sys.argv = [program_path, verb]
status = hostside.main()
finished = time.perf_counter()

in_commands = sum(seconds for seconds, _ in command_times)
report = {
    "import_ms": round((imported - started) * 1000, 1),
    "verb_ms": round((finished - imported) * 1000, 1),
    "in_commands_ms": round(in_commands * 1000, 1),
    "commands": [[round(seconds * 1000, 1), [str(part) for part in argv]] for seconds, argv in command_times],
}
print(json.dumps(report), file=sys.stderr)
sys.exit(status)
