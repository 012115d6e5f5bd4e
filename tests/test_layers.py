"""The layer contracts in pyproject.toml hold, and breaking one fails lint-imports."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import ROOT

PACKAGES = ("schemas", "state", "producer", "worker", "ranker", "ops", "bench")
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def _copy_tree(tmp_path: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "imports", "contract"), [
    ("producer/_probe.py", "from worker import tasks", "producer loads no worker"),
    ("producer/_probe.py", "import anthropic", "producer loads no worker"),
    ("schemas/_probe.py", "import redis", "pydantic only"),
    ("state/_probe.py", "from ops import cli", "Layers"),
    ("ranker/_probe.py", "from state import store", "ranker imports the contract only"),
])
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, imports: str, contract: str
) -> None:
    root = _copy_tree(tmp_path)
    (root / module).write_text(f'"""A throwaway module breaking a layer."""\n\n{imports}\n')
    result = _lint(root)
    assert result.returncode != 0
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(contract in line for line in broken), result.stdout


def test_no_function_level_import_dodges_a_cycle() -> None:
    """A late import of this project's modules is only there to load a heavy dependency on
    demand, and says so in a comment just above it; none dodges an import cycle."""
    for name in PACKAGES:
        for path in (ROOT / name).rglob("*.py"):
            lines = path.read_text().splitlines()
            for node in _late_imports(ast.parse("\n".join(lines))):
                above = "\n".join(lines[max(0, node.lineno - 8):node.lineno - 1])
                assert "on demand" in above, f"{path}:{node.lineno}: late import of " \
                    f"{node.module} without saying why"


def _late_imports(tree: ast.Module) -> list[ast.ImportFrom]:
    """``from <project package> import ...`` statements inside functions."""
    found = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            found += [n for n in ast.walk(fn) if isinstance(n, ast.ImportFrom) and n.module
                      and n.module.split(".")[0] in PACKAGES]
    return found
