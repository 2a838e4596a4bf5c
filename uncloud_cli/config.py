"""Contexts (an API URL and a token each) in a config file, with environment overrides.

The file is JSON at $UNCLOUD_CONFIG, else $XDG_CONFIG_HOME/uncloud/config.json, else
~/.config/uncloud/config.json; it holds tokens, so it is written with mode 600 (its directory 700).
UNCLOUD_CONTEXT picks a context, UNCLOUD_URL and UNCLOUD_TOKEN override the chosen one's values.
"""

import json
import os
from pathlib import Path


def config_path() -> Path:
    if os.environ.get("UNCLOUD_CONFIG"):
        return Path(os.environ["UNCLOUD_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "uncloud" / "config.json"


def load() -> dict:
    try:
        data = json.loads(config_path().read_text())
    except FileNotFoundError:
        data = {}
    data.setdefault("contexts", {})
    data.setdefault("current", None)
    return data


def save(data: dict) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(path.name + ".tmp")
    # Created with mode 600 from the first byte (a chmod after writing would leave a window).
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    return path


def resolve(context: str | None = None, url: str | None = None, token: str | None = None) -> dict:
    """The settings a command runs with: options beat the environment, which beats the file."""
    data = load()
    name = context or os.environ.get("UNCLOUD_CONTEXT") or data["current"]
    chosen = dict(data["contexts"].get(name, {})) if name else {}
    if context and context not in data["contexts"]:
        chosen["missing"] = context
    chosen["name"] = name
    chosen["url"] = url or os.environ.get("UNCLOUD_URL") or chosen.get("url")
    chosen["token"] = token or os.environ.get("UNCLOUD_TOKEN") or chosen.get("token")
    return chosen
