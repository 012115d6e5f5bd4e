"""A repository opened for evaluation: its index plus scoring, failures and sensitivity."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from ranker.batch import Batch, build_batch
from ranker.cases import Case
from ranker.evaluation import Effect, Evaluation, Sensitivity
from ranker.gitio import head
from ranker.index import Index, Progress, build, cache_path, load, save
from ranker.metrics import CaseMeta, paired
from ranker.scoring import boosts, case_ndcg, orderings, pagerank_mix, solve_batch
from schemas.failures import RankingFailure, RepoContext
from schemas.limits import (
    MAX_COMMIT_MESSAGE_CHARS,
    MAX_FILES_PER_LIST,
    MAX_PATH_CHARS,
    MAX_QUERY_CHARS,
    MAX_REPO_NAME_CHARS,
)
from schemas.params import PARAM_NAMES, PARAM_SPECS, ParameterPoint

Split = Literal["tuning", "heldout", "all"]
F64 = npt.NDArray[np.float64]
FAILURE_NDCG = 0.5
ALPHA_STEPS = (0.5, 0.95)
STEP_FACTORS = (0.5, 2.0)
SOLUTIONS_KEPT = 8  # PageRank solutions cached per (split, alpha)


class Repository:
    """One repository's evaluation cases; scoring a point is PageRank plus array boosts."""

    def __init__(self, path: Path, index: Index, rev: str = "HEAD") -> None:
        self.path = path
        self.index = index
        self.rev = rev
        self._batches: dict[str, Batch] = dict(index.batches)
        self._solutions: OrderedDict[tuple[str, float], F64] = OrderedDict()

    def is_current(self) -> bool:
        """True while the revision this index was opened at still names its commit (HEAD
        moves with new commits; a commit id never does)."""
        return head(self.path, self.rev) == self.index.head

    @property
    def name(self) -> str:
        """The repository directory's name."""
        return self.path.resolve().name[:MAX_REPO_NAME_CHARS] or "unknown"

    @property
    def file_count(self) -> int:
        """Files in HEAD's tree."""
        return self.index.stats.file_count

    @property
    def languages(self) -> dict[str, int]:
        """HEAD's files per grammar language."""
        return dict(self.index.stats.languages)

    @property
    def untagged_files(self) -> int:
        """HEAD's files in languages without a grammar (they carry no tags)."""
        return self.index.stats.untagged_files

    @property
    def skipped_files(self) -> int:
        """HEAD's source files not parsed: binary or over the size cap."""
        return self.index.stats.skipped_files

    @property
    def case_counts(self) -> dict[str, int]:
        """Number of cases per split."""
        return {s: len(self._batch(s).cases) for s in ("tuning", "heldout")}

    def _batch(self, split: str) -> Batch:
        """A split's batch; "all" is built on first use, not stored in the index."""
        if split not in self._batches:
            self._batches[split] = build_batch(
                list(self._batch("tuning").cases + self._batch("heldout").cases),
                self.index.graphs)
        return self._batches[split]

    def cases(self, split: Split = "tuning") -> tuple[Case, ...]:
        """The cases of a split, ordered by commit then seed."""
        return self._batch(split).cases

    def case_meta(self, split: Split = "tuning") -> CaseMeta:
        """Case weights, commit groups and bootstrap resamples of a split."""
        return self._batch(split).meta

    def paths(self, case: Case) -> tuple[str, ...]:
        """Paths of a case's parent tree, in node order."""
        return self.index.graphs[case.tree].paths

    def _solution(self, split: str, batch: Batch, alpha: float) -> F64:
        key = (split, alpha)
        if key not in self._solutions:
            self._solutions[key] = solve_batch(batch, alpha)
            while len(self._solutions) > SOLUTIONS_KEPT:
                self._solutions.popitem(last=False)
        self._solutions.move_to_end(key)
        return self._solutions[key]

    def scores(self, point: ParameterPoint, split: Split = "tuning") -> F64:
        """Score of every (case, file) entry of a split: PageRank × boosts × git weight."""
        batch = self._batch(split)
        z = self._solution(split, batch, point.pagerank_alpha)
        return pagerank_mix(batch, z, point) * boosts(batch, point)

    def evaluate(self, point: ParameterPoint, cases: Split = "tuning") -> Evaluation:
        """Weighted NDCG@10 over a split's cases with its 95 % commit-bootstrap interval."""
        batch = self._batch(cases)
        per_case = case_ndcg(batch, self.scores(point, cases))
        low, high = batch.meta.interval(per_case)
        return Evaluation(cases, batch.meta.weighted_mean(per_case), low, high,
                          len(batch.cases), batch.meta.commits, per_case)

    def rankings(self, point: ParameterPoint, split: Split = "tuning") -> list[list[str]]:
        """Each case's ranked paths (seed excluded, ties broken by path)."""
        batch = self._batch(split)
        order = orderings(batch, self.scores(point, split))
        bounds = np.searchsorted(batch.entries.case[order], np.arange(len(batch.cases) + 1))
        return [self._ranked(batch, order, bounds, c) for c in range(len(batch.cases))]

    def _ranked(self, batch: Batch, order: npt.NDArray[np.int64], bounds: npt.NDArray[np.int64],
                c: int, limit: int | None = None) -> list[str]:
        nodes = batch.entries.node[order[bounds[c]:bounds[c + 1]]][:limit]
        paths = self.paths(batch.cases[c])
        return [paths[n] for n in nodes]

    def failures(self, point: ParameterPoint, cases: Split = "tuning", limit: int | None = None,
                 params_version: int | None = None) -> list[RankingFailure]:
        """Cases under NDCG@10 0.5, as RankingFailures (lists and strings cut to the limits)."""
        batch = self._batch(cases)
        scores = self.scores(point, cases)
        per_case = case_ndcg(batch, scores)
        failing = np.flatnonzero(per_case < FAILURE_NDCG)[:limit]
        order = orderings(batch, scores)
        bounds = np.searchsorted(batch.entries.case[order], np.arange(len(batch.cases) + 1))
        context = RepoContext(name=self.name, file_count=self.file_count)
        return [self._failure(batch, int(c), float(per_case[c]),
                              self._ranked(batch, order, bounds, int(c), 10), context,
                              params_version) for c in failing]

    def _failure(self, batch: Batch, c: int, ndcg: float, actual: list[str],
                 context: RepoContext, params_version: int | None) -> RankingFailure:
        case = batch.cases[c]
        paths = self.paths(case)
        expected = [paths[n][:MAX_PATH_CHARS] for n in case.expected[:MAX_FILES_PER_LIST]]
        return RankingFailure(
            query=case.subject[:MAX_QUERY_CHARS],
            seed_file=paths[case.seed][:MAX_PATH_CHARS],
            expected_top=expected,
            actual_top=[p[:MAX_PATH_CHARS] for p in actual[:MAX_FILES_PER_LIST]],
            ndcg=round(min(1.0, max(0.0, ndcg)), 6),
            commit_message=case.subject[:MAX_COMMIT_MESSAGE_CHARS],
            repo_context=context,
            params_version=params_version,
        )

    def sensitivity(self, point: ParameterPoint) -> Sensitivity:
        """Each parameter stepped down and up alone (×0.5 and ×2 clamped to the spec's
        floor/ceiling; alpha to 0.5 and 0.95): tuning NDCG at both, and inert when no
        case's ranking changes at either step."""
        batch = self._batch("tuning")
        base_order = orderings(batch, self.scores(point))
        effects = []
        for name in PARAM_NAMES:
            value = float(getattr(point, name))
            steps = ALPHA_STEPS if name == "pagerank_alpha" else tuple(
                PARAM_SPECS[name].clamp(value * f) for f in STEP_FACTORS)
            ndcgs, same = [], True
            for step in steps:
                moved = point.model_copy(update={name: step})
                scores = self.scores(moved)
                ndcgs.append(batch.meta.weighted_mean(case_ndcg(batch, scores)))
                same = same and np.array_equal(orderings(batch, scores), base_order)
            effects.append(Effect(name, value, steps[0], steps[1], ndcgs[0], ndcgs[1], same))
        return Sensitivity(self.evaluate(point), tuple(effects))


def open_repository(path: Path | str, cache_dir: Path, window: int = 2000,
                    progress: Progress | None = None, rev: str = "HEAD") -> Repository:
    """Open a git repository for evaluation at ``rev`` (HEAD by default: a commit id pins
    the cases), loading its cached index when that commit and the window are unchanged,
    else building it (re-parsing only blobs not seen before).

    Raises RepositoryError (a ValueError) when ``path`` is no git repository or has too
    few usable commits.
    """
    repo = Path(path)
    sha = head(repo, rev)
    where = cache_path(Path(cache_dir), repo)
    cached = load(where)
    if cached is not None and cached.head == sha and cached.window == window:
        cached.parsed_blobs = 0
        return Repository(repo, cached, rev)
    index = build(repo, window, cached, progress, sha)
    save(index, where)
    return Repository(repo, index, rev)


def paired_interval(a_per_case: F64, b_per_case: F64, repo_or_meta: Repository | CaseMeta,
                    split: Split = "tuning") -> tuple[float, float, float]:
    """(weighted mean of a − b, 95 % low, high) with a paired bootstrap over whole commits;
    ``a``/``b`` are two points' ``Evaluation.per_case`` on the same split."""
    meta = repo_or_meta.case_meta(split) if isinstance(repo_or_meta, Repository) else repo_or_meta
    return paired(meta, a_per_case, b_per_case)
