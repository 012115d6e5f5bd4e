"""Figures from the chaos, fuzz and security tests, and the RELIABILITY.md table built from them.

Each test records what it did (batches sent, kills, restarts, lost, duplicated, inputs
fuzzed...) under its own name in a JSON file: ``RIPMAP_RELIABILITY_FIGURES`` if set, else
``.ripmap/reliability-figures.json``. ``python -m tests.reliability`` renders the last
recorded figures into RELIABILITY.md between its ``<!-- figures -->`` markers.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "RELIABILITY.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"

# The columns of the table, in order: figure key -> heading.
COLUMNS = {
    "batches": "batches sent",
    "kills": "kills",
    "restarts": "restarts",
    "faults": "faults injected",
    "redelivered": "redeliveries",
    "merged": "merged",
    "dead_lettered": "dead-lettered",
    "lost": "lost",
    "duplicated": "duplicated",
    "inputs": "inputs fuzzed",
}


def figures_path() -> Path:
    """Where figures are recorded (as set when the tests were collected)."""
    return _FIGURES


_FIGURES = Path(os.environ.get("RIPMAP_RELIABILITY_FIGURES",
                               ROOT / ".ripmap" / "reliability-figures.json"))


def scale() -> float:
    """How much bigger than the default run to make the chaos suite (``make chaos``: 4),
    as set when the tests were collected (fixtures clear ``RIPMAP_*`` from the environment)."""
    return _SCALE


_SCALE = float(os.environ.get("RIPMAP_CHAOS_SCALE", "1"))


def record(test: str, **figures: Any) -> None:
    """Store ``figures`` for ``test`` (replacing its previous ones), with when and at which
    scale and commit they were measured."""
    path = figures_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / (path.name + ".lock")).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs must not lose each other's rows
        data = json.loads(path.read_text()) if path.exists() else {}
        data[test] = {**figures, "scale": scale(), "measured_at": time.strftime(
            "%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "commit": _commit()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)


def table(data: dict[str, dict[str, Any]]) -> str:
    """The figures as a markdown table, one row per test."""
    head = ["test", *COLUMNS.values(), "other figures", "scale", "measured"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for test in sorted(data):
        fig = data[test]
        other = ", ".join(f"{k} {v}" for k, v in sorted(fig.items())
                          if k not in COLUMNS and k not in ("scale", "measured_at", "commit"))
        cells = [f"`{test}`", *(str(fig.get(k, "")) for k in COLUMNS), other or "",
                 f"{fig.get('scale', '')}", f"{fig.get('measured_at', '')} "
                 f"({fig.get('commit', '')})"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def render(doc: Path = DOC) -> None:
    """Replace the table between the markers in ``doc`` with the recorded figures."""
    data = json.loads(figures_path().read_text())
    text = doc.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    doc.write_text(text[:start] + "\n" + table(data) + "\n" + text[end:])


def _commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    return done.stdout.strip() or "?"


if __name__ == "__main__":
    if not figures_path().exists():
        sys.exit(f"no figures at {figures_path()}: run `make chaos` or the chaos tests first")
    render()
    print(f"RELIABILITY.md table rendered from {figures_path()}")
