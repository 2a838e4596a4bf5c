"""Storage backends behind one interface: every storage a disk can have has a backend with every
method images/hostwork.py calls, and hostwork names no backend module (the cycle it had with rbd)."""

import ast
import inspect
from pathlib import Path

import pytest

from images import hostwork
from images.backends import backend_for
from images.choices import StorageBackend

INTERFACE = ["ensure_disk", "delete_disk", "snapshot_disk", "delete_snapshot", "fetch_snapshot", "plug_source"]


@pytest.mark.parametrize("storage", StorageBackend.values)
def test_every_storage_has_the_whole_interface(storage):
    backend = backend_for(storage)
    for method in INTERFACE:
        assert callable(getattr(backend, method, None)), (storage, method)
    assert isinstance(backend.batchable, bool)
    # The same arguments everywhere: hostwork calls them without knowing which backend it holds.
    signatures = {storage: [list(inspect.signature(getattr(backend_for(storage), method)).parameters)
                            for method in INTERFACE] for storage in StorageBackend.values}
    assert len({str(value) for value in signatures.values()}) == 1


def test_hostwork_names_no_backend_module():
    tree = ast.parse(Path(hostwork.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "images.rbd" not in imported
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.col_offset > 0]
