"""`python -m images.demo_guest build` builds (or finds) the demo guest and prints it as JSON."""

import argparse
import json
from dataclasses import asdict

from . import build_demo_guest


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m images.demo_guest")
    parser.add_argument("command", choices=["build"])
    parser.add_argument("--cache-dir", help="default: $UNCLOUD_CACHE_DIR or ~/.cache/uncloud")
    arguments = parser.parse_args()
    guest = build_demo_guest(arguments.cache_dir)
    print(json.dumps({key: str(value) for key, value in asdict(guest).items()}, indent=2))


if __name__ == "__main__":
    main()
