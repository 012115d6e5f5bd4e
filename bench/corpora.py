"""The closed loop's benchmark sections, run by ``bench.run`` on the shared corpora.

The corpora are git bundles of real repositories in ``../shared/corpora`` beside the
checkout (``RIPMAP_CORPORA`` overrides); where they are absent each section says so.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench import headtohead as headtohead_section
from bench import ranker as ranker_section
from bench import transfer as transfer_section
from bench.common import Options
from tests.services import ROOT

BUNDLES = ("flask", "fd", "commander.js")


def corpora_dir() -> Path:
    """Where the corpus bundles are."""
    return Path(os.environ.get("RIPMAP_CORPORA", ROOT.parent / "shared" / "corpora"))


def _missing(title: str) -> str | None:
    where = corpora_dir()
    if all((where / f"{b}.bundle").exists() for b in BUNDLES):
        return None
    return f"## {title}\n\nSkipped: the corpus bundles are not in `{where}` (set RIPMAP_CORPORA)."


def ranker(opts: Options) -> str:
    """The reference ranker: index build, scoring speed, default NDCG per corpus."""
    skipped = _missing("Reference ranker")
    return skipped or ranker_section.run(corpora_dir(), Path(tempfile.mkdtemp(prefix="ripmap-rk-")))


def headtohead(opts: Options) -> str:
    """The service's loop against TPE and random search at equal budgets."""
    skipped = _missing("Head-to-head")
    if skipped:
        return skipped
    budgets, seeds = ((10,), 2) if opts.quick else ((10, 20, 30), 5)
    return headtohead_section.run(corpora_dir(), Path(tempfile.mkdtemp(prefix="ripmap-h2h-")),
                       budgets=budgets, seeds=seeds)


def transfer(opts: Options) -> str:
    """Leave one repository out: presets learned on the others, on the left-out one."""
    skipped = _missing("Transfer")
    if skipped:
        return skipped
    return transfer_section.run(corpora_dir(), Path(tempfile.mkdtemp(prefix="ripmap-lo-")),
                       seeds=2 if opts.quick else 5)
