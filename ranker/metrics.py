"""Weighted NDCG@10 and bootstrap intervals that resample whole commits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

K = 10
RESAMPLES = 1000
SEED = 20_240_601
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def discount(ranks: npt.NDArray[np.integer]) -> FloatArray:
    """1 / log2(rank + 2) for 0-based ranks under K, else 0."""
    r = np.asarray(ranks, np.float64)
    return np.where(r < K, 1.0 / np.log2(r + 2.0), 0.0)


def dcg(relevance: FloatArray, ranks: npt.NDArray[np.integer], group: IntArray,
        groups: int) -> FloatArray:
    """DCG@K per group: Σ rel_i / log2(rank_i + 2) over the group's items ranked under K."""
    return np.bincount(group, relevance * discount(ranks), minlength=groups).astype(np.float64)


def ideal_dcg(relevance: FloatArray) -> float:
    """IDCG@K of one case: its relevances sorted descending at ranks 0, 1, …"""
    best = np.sort(np.asarray(relevance, np.float64))[::-1][:K]
    return float((best * discount(np.arange(len(best)))).sum())


def resample_counts(commits: int, resamples: int = RESAMPLES, seed: int = SEED) -> FloatArray:
    """(resamples × commits) multiplicities of commits drawn with replacement (fixed seed)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, commits, size=(resamples, commits))
    rows = np.repeat(np.arange(resamples), commits)
    flat = np.bincount(rows * commits + draws.ravel(), minlength=resamples * commits)
    counts: FloatArray = flat.reshape(resamples, commits).astype(np.float64)
    return counts


@dataclass(frozen=True)
class CaseMeta:
    """Weights and commit group (0..commits−1) of each case of a split, and the resamples."""

    weights: FloatArray
    commit_of_case: IntArray
    commits: int
    counts: FloatArray

    def weighted_mean(self, values: FloatArray) -> float:
        """Σ w·v / Σ w."""
        return float((self.weights * values).sum() / self.weights.sum())

    def interval(self, values: FloatArray) -> tuple[float, float]:
        """95 % percentile bootstrap interval of the weighted mean, resampling commits."""
        num = np.bincount(self.commit_of_case, self.weights * values, minlength=self.commits)
        den = np.bincount(self.commit_of_case, self.weights, minlength=self.commits)
        means = (self.counts @ num) / (self.counts @ den)
        low, high = np.percentile(means, [2.5, 97.5])
        return float(low), float(high)


def case_meta(weights: FloatArray, commit_of_case: IntArray) -> CaseMeta:
    """CaseMeta with the fixed-seed commit resamples."""
    commits = int(commit_of_case.max()) + 1 if len(commit_of_case) else 0
    return CaseMeta(weights, commit_of_case, commits, resample_counts(max(commits, 1)))


def paired(meta: CaseMeta, a: FloatArray, b: FloatArray) -> tuple[float, float, float]:
    """(weighted mean of a − b, 95 % bootstrap low, high) over the same cases, resampling
    whole commits so both points see the same draw."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return (meta.weighted_mean(diff), *meta.interval(diff))
