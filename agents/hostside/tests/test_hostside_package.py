"""The host-side program as one artifact: a reproducible zipapp of a stdlib-only package.

No root and no lab: these run the artifact with the hypervisor's /usr/bin/python3 on a temp dir.
"""
import ast
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from hostside_testlib import PROGRAM, PYTHON

from agents.hostside import build
from agents.hostside.uncloud_hostside import dispatch

PACKAGE_DIR = Path(build.__file__).resolve().parent / "uncloud_hostside"


@pytest.fixture
def short_dir():
    """A short temp dir: state_dir is limited so the QMP socket path below it fits sun_path."""
    directory = Path(tempfile.mkdtemp(prefix="hs-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def run_artifact(program, verb, spec):
    completed = subprocess.run([PYTHON, "-I", "-S", str(program), verb], input=json.dumps(spec),
                               capture_output=True, text=True, timeout=60)
    return completed.returncode, json.loads(completed.stdout)


def test_the_artifact_is_reproducible_sorted_and_timeless():
    first, second = build.build_zipapp(), build.build_zipapp()
    assert first == second
    with zipfile.ZipFile(PROGRAM) as archive:
        infos = archive.infolist()
    names = [info.filename for info in infos]
    assert names == sorted(names)
    assert "__main__.py" in names and "uncloud_hostside/__main__.py" in names
    assert {f"uncloud_hostside/{path.name}" for path in PACKAGE_DIR.glob("*.py")} <= set(names)
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert {info.date_time for info in infos} == {build.FIXED_TIME}


def test_host_info_reports_the_checksum_of_the_archive_it_runs_from(short_dir):
    # A copy elsewhere under another name: the checksum is the file's, wherever it lies.
    copy = short_dir / "copy.pyz"
    copy.write_bytes(PROGRAM.read_bytes())
    status, answer = run_artifact(copy, "host-info", {"state_dir": str(short_dir / "state")})
    assert status == 0, answer
    assert answer["result"]["sha256"] == hashlib.sha256(copy.read_bytes()).hexdigest()


def test_the_metadata_service_is_started_as_the_archive(short_dir):
    """metadata-up re-executes the program as `metadata-serve`: it must name the zipapp (no module
    of the package is a plain file). The service comes up, answers state, and goes down."""
    state_dir = short_dir / "state"
    status, answer = run_artifact(PROGRAM, "metadata-up", {"state_dir": str(state_dir), "port": 8080})
    try:
        assert status == 0, answer
        pid = int((state_dir / "metadata" / "server.pid").read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        assert str(PROGRAM) in argv and "metadata-serve" in argv
    finally:
        status, answer = run_artifact(PROGRAM, "metadata-down", {"state_dir": str(state_dir)})
        assert status == 0, answer


def test_every_module_imports_only_the_standard_library():
    """The hypervisor has python3 and nothing else: every import is stdlib or the package itself."""
    foreign = []
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [] if node.level else [node.module]
            else:
                continue
            foreign += [f"{path.name}: {name}" for name in names
                        if name.split(".")[0] not in sys.stdlib_module_names]
    assert foreign == []


def test_the_verb_table_covers_every_verb_function():
    """A verb_* function that no table entry reaches is dead code or a forgotten verb."""
    defined = set()
    for path in PACKAGE_DIR.glob("*.py"):
        defined |= {node.name for node in ast.parse(path.read_text()).body
                    if isinstance(node, ast.FunctionDef) and node.name.startswith("verb_")}
    assert defined == {function.__name__ for function in dispatch.VERBS.values()}
