"""The state-dir layout lives in paths.py alone: every path it names is below state_dir, and no
other module builds a path from state_dir itself."""
import ast
import inspect
from pathlib import Path

from agents.hostside.uncloud_hostside import paths

PACKAGE_DIR = Path(paths.__file__).parent
STATE_DIR = "/srv/uc"
UUID = "6f1c2d3e-0000-4000-8000-000000000001"
ARGUMENTS = {"vni": 100, "vm_uuid": UUID, "disk_uuid": UUID, "snapshot_uuid": UUID, "sha256": "ab" * 32,
             "token": "0123abcd", "tap": "uc0123456789n0", "pool_id": 1}


def test_every_path_is_below_the_state_dir():
    for name, function in inspect.getmembers(paths, inspect.isfunction):
        parameters = list(inspect.signature(function).parameters)
        assert parameters[0] == "state_dir", name
        answer = function(STATE_DIR, *(ARGUMENTS[parameter] for parameter in parameters[1:]))
        for path in answer.values() if isinstance(answer, dict) else [answer]:
            assert path.startswith(STATE_DIR + "/"), (name, path)


def test_no_other_module_builds_a_path_from_state_dir():
    offenders = []
    for module in sorted(PACKAGE_DIR.glob("*.py")):
        if module.name == "paths.py":
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if (isinstance(node, ast.Call) and ast.unparse(node.func) == "os.path.join" and node.args
                    and ast.unparse(node.args[0]) == "state_dir"):
                offenders.append(f"{module.name}:{node.lineno}")
    assert offenders == []
