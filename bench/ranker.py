"""The reference ranker on the three corpora: cold index build, warm scoring, memory, NDCG.

``run(corpora_dir, work_dir)`` returns a Markdown section; ``python -m bench.ranker`` prints it.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from bench.common import clone_bundle
from ranker import Repository, open_repository
from ranker.index import cache_path, load
from schemas.params import ParameterPoint
from tests.services import ROOT

CORPORA = ("flask", "fd", "commander.js")
CORPORA_DIR = ROOT.parent / "shared" / "corpora"  # beside the checkout
WINDOW = 2000
RUNS = 20


def _median_ms(action: object, runs: int = RUNS) -> float:
    assert callable(action)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _baseline_ms() -> float:
    """One 1000×1000 float64 dense matrix-vector product: the machine's speed today."""
    rng = np.random.default_rng(0)
    a, x = rng.random((1000, 1000)), rng.random(1000)
    return _median_ms(lambda: a @ x, 200)


def _scoring(repo: Repository) -> tuple[float, float, float]:
    """Median ms of scoring defaults over the tuning cases: with PageRank solved for this
    alpha already (cached), with the solve redone every time (alpha moved), and of RUNS
    points at alphas never solved before, evenly over 0.5..0.95 (new alpha)."""
    point = ParameterPoint()
    repo.evaluate(point)
    cached = _median_ms(lambda: repo.evaluate(point))

    def uncached() -> None:
        repo._solutions.clear()
        repo.evaluate(point)

    fresh = iter(point.model_copy(update={"pagerank_alpha": float(a)})
                 for a in np.linspace(0.5, 0.95, RUNS) + 1e-4)
    return cached, _median_ms(uncached), _median_ms(lambda: repo.evaluate(next(fresh)))


def _memory(cache_dir: Path, clone: Path) -> tuple[int, int]:
    """(bytes of the pickled index, tracemalloc peak while loading it)."""
    path = cache_path(cache_dir, clone)
    tracemalloc.start()
    load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return path.stat().st_size, peak


def _row(name: str, corpora_dir: Path, work_dir: Path) -> list[str]:
    clone = clone_bundle(corpora_dir / f"{name}.bundle", work_dir / name, fresh=True)
    cache = work_dir / f"{name}-cache"
    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    repo = open_repository(clone, cache, window=WINDOW)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    open_repository(clone, cache, window=WINDOW)
    load_s = time.perf_counter() - start
    cached, uncached, new_alpha = _scoring(repo)
    size, peak = _memory(cache, clone)
    tune, held = (repo.evaluate(ParameterPoint(), s) for s in ("tuning", "heldout"))
    return [
        name, f"{repo.index.window_commits}", f"{tune.cases} / {held.cases}",
        f"{repo.index.parsed_blobs}", f"{cold:.2f} s", f"{load_s * 1000:.0f} ms",
        f"{cached:.1f} ms", f"{uncached:.1f} ms", f"{new_alpha:.1f} ms",
        f"{cold * 1000 / uncached:.0f}×",
        f"{size / 2**20:.1f} MiB / {peak / 2**20:.1f} MiB",
        f"{tune.ndcg:.3f} [{tune.low:.3f}, {tune.high:.3f}]",
        f"{held.ndcg:.3f} [{held.low:.3f}, {held.high:.3f}]",
    ]


HEADER = ["corpus", "window commits", "cases tuning / held-out", "blobs parsed", "cold build",
          "index load", "score (alpha cached)", "score (alpha moved)", "score (new alpha)",
          "cold / score",
          "index pickle / load peak", "NDCG@10 tuning [95 %]", "NDCG@10 held-out [95 %]"]


def run(corpora_dir: Path, work_dir: Path) -> str:
    """Clone each bundle into ``work_dir``, build its index cold, score defaults warm over
    the tuning cases (medians of RUNS), measure the index, and return a Markdown section."""
    work_dir.mkdir(parents=True, exist_ok=True)
    baseline = _baseline_ms()
    rows = [_row(name, corpora_dir, work_dir) for name in CORPORA]
    lines = ["## Reference ranker", "",
             f"Window {WINDOW} first-parent commits, default parameters, medians of {RUNS} "
             "runs. *Score (alpha cached)* reuses the PageRank solutions of that alpha (any "
             "point differing from the last ones only in other parameters); *alpha moved* "
             "re-solves PageRank for the default alpha each time (one sparse LU of every "
             "tree, all depth classes and seeds as right-hand sides); *new alpha* scores "
             f"{RUNS} points at alphas not solved before, evenly over 0.5–0.95. NDCG "
             "intervals resample whole commits. Baseline in the "
             f"same run: one 1000×1000 dense float64 matvec = {baseline:.3f} ms.", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    corpora = Path(sys.argv[1]) if len(sys.argv) > 1 else CORPORA_DIR
    work = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("/tmp/ranker-bench")
    print(run(corpora, work))
