"""Opt-in check on a real repository: fd's bundle from the shared corpora, when present."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ranker import open_repository
from schemas.params import ParameterPoint

ROOT = Path(__file__).resolve().parent.parent
CANDIDATES = (Path("/work/shared/corpora"), ROOT.parent / "shared" / "corpora")


def _bundle(name: str) -> Path:
    for corpora in CANDIDATES:
        if (corpora / name).is_file():
            return corpora / name
    pytest.skip(f"{name} not found in {' or '.join(map(str, CANDIDATES))} (shared corpora absent)")


def test_fd_corpus_cases_and_default_score(tmp_path: Path) -> None:
    clone = tmp_path / "fd"
    subprocess.run(["git", "clone", "-q", str(_bundle("fd.bundle")), str(clone)], check=True,
                   capture_output=True)
    repo = open_repository(clone, tmp_path / "cache", window=2000)
    assert repo.case_counts == {"tuning": 645, "heldout": 129}
    assert repo.languages == {"rust": 24}
    for split in ("tuning", "heldout"):
        ev = repo.evaluate(ParameterPoint(), split)
        assert 0 < ev.low <= ev.ndcg <= ev.high < 1
