"""The test toolkit is tests/lab: bench/ takes its helpers from there, never from an app's tests."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_imports_no_app_tests():
    offenders = []
    for script in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{script.name}: {name}" for name in names
                          if ".tests" in f".{name}" and not name.startswith("tests.lab")]
    assert offenders == []
