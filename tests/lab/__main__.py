"""Build or remove a lab outside pytest.

    python -m tests.lab up --hosts 2 --workdir DIR     # prints the lab as JSON (also in DIR/lab.json)
    python -m tests.lab down --workdir DIR
    python -m tests.lab cleanup                        # remove labs whose owner died

A lab made here belongs to the calling process (our parent, e.g. the shell or benchmark script): once
that dies, cleanup_stale() may remove the lab. `--owner-pid 0` keeps it until `down`.
"""
import argparse
import json
import os
import sys
from pathlib import Path

from .hosts import Lab, cleanup_stale, lab_unavailable_reason


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="build a lab and print it as JSON")
    up.add_argument("--hosts", type=int, default=2)
    up.add_argument("--workdir", type=Path, required=True)
    up.add_argument("--owner-pid", type=int, default=os.getppid(),
                    help="the lab is stale once this process is gone (default: our parent; 0: never)")
    down = commands.add_parser("down", help="remove the lab described by WORKDIR/lab.json")
    down.add_argument("--workdir", type=Path, required=True)
    commands.add_parser("cleanup", help="remove labs left behind by dead owners")
    args = parser.parse_args(argv)

    if args.command == "up":
        reason = lab_unavailable_reason()
        if reason:
            print(f"cannot build a lab here: {reason}", file=sys.stderr)
            return 2
        lab = Lab(args.workdir, n_hosts=args.hosts, owner_pid=args.owner_pid).up()
        print(json.dumps(lab.describe(), indent=2))
    elif args.command == "down":
        Lab.from_workdir(args.workdir).down()
    else:
        print(json.dumps(cleanup_stale()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
