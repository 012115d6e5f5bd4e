"""Scoring a parameter point over a Batch: PageRank × boosts × git weight, then ranks."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ranker.batch import Batch
from ranker.boosts import churn, flag_boost, focus_expansion, recency
from ranker.depth import DEPTH_PARAMS
from ranker.metrics import dcg
from ranker.pagerank import solve
from schemas.params import ParameterPoint

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def solve_batch(batch: Batch, alpha: float) -> F64:
    """PageRank solutions at damping ``alpha`` per entry: row k < 4 is its tree's solution
    for depth class k's indicator (0 when the tree has no such file), the last row the
    solution for its case's seed."""
    s, e = batch.solves, batch.entries
    z = np.append(solve(s.system, s.rhs, alpha).ravel(), 0.0)
    return np.concatenate([z[e.class_index], z[e.seed_index][None]])


def pagerank_mix(batch: Batch, z: F64, point: ParameterPoint) -> F64:
    """Unnormalised PageRank per entry: Σ_k w_k z_k + (m − 1)·w_seed·z_seed, i.e. the
    solution for p = depth weights with the seed's weight × m (m = pagerank_chat_multiplier),
    from ``solve_batch``'s rows. Each case's ranking ignores the normalisation, so it is
    skipped."""
    e = batch.entries
    w = np.array([getattr(point, name) for name in DEPTH_PARAMS])
    base = sum((w[k] * z[k] for k in range(len(w))), np.zeros(len(e.node)))
    seed = (point.pagerank_chat_multiplier - 1.0) * w[e.seed_depth] * z[len(w)]
    return np.asarray(base + seed, np.float64)


def boosts(batch: Batch, point: ParameterPoint) -> F64:
    """Product of the contextual boosts and the git weight (recency × churn) per entry."""
    e = batch.entries
    return (
        flag_boost(e.mentioned_ident, point.boost_mentioned_ident)
        * flag_boost(e.mentioned_file, point.boost_mentioned_file)
        * flag_boost(e.is_seed, point.boost_chat_file)
        * flag_boost(e.coupled, point.boost_temporal_coupling)
        * focus_expansion(e.hops, point.boost_focus_expansion, point.focus_decay,
                          point.focus_max_hops)
        * recency(e.days, point.git_recency_max_boost, point.git_recency_decay_days)
        * churn(e.changes, point.git_churn_threshold, point.git_churn_max_boost)
    )


def expected_ranks(batch: Batch, scores: F64) -> I64:
    """0-based rank of each expected file in its case's list (seed excluded): the files
    scoring higher, plus those scoring the same with an earlier path."""
    p = batch.pairs
    mine = scores[p.expected[p.pair_expected]]
    other = scores[p.pair_other]
    earlier = batch.entries.node[p.pair_other] < batch.entries.node[p.expected[p.pair_expected]]
    ahead = (other > mine) | ((other == mine) & earlier)
    return np.bincount(p.pair_expected, ahead, minlength=len(p.expected)).astype(np.int64)


def case_ndcg(batch: Batch, scores: F64) -> F64:
    """NDCG@10 per case = DCG / IDCG."""
    p = batch.pairs
    found = dcg(p.relevance, expected_ranks(batch, scores), p.case, len(batch.cases))
    return np.clip(found / p.ideal, 0.0, 1.0)


def orderings(batch: Batch, scores: F64) -> I64:
    """Entries sorted by case, then score descending, then path, seeds dropped."""
    e = batch.entries
    order = np.lexsort((e.node, -scores, e.case))
    return order[~e.is_seed[order]]
