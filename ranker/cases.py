"""Retrocausal-oracle cases: each changed source file of a commit, ranked in its parent tree,
should bring up the commit's other changed files."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ranker.graph import TreeGraph, hops_from
from ranker.history import Candidate
from ranker.query import query_tokens
from ranker.tagstore import IntArray, TagStore

COUPLING_THRESHOLD = 0.3
UNSEEN_RELEVANCE = 0.1
SECONDS_PER_DAY = 86_400.0
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Case:
    """One seed of one commit, with every parameter-independent feature of its ranking.

    Node arrays are indexed like ``TreeGraph.paths`` of the parent tree ``tree``;
    ``expected`` is sorted by relevance (descending), then path.
    """

    position: int
    sha: str
    subject: str
    quality: float
    tree: str
    seed: int
    expected: IntArray
    relevance: FloatArray
    mentioned_ident: BoolArray
    mentioned_file: BoolArray
    coupled: BoolArray
    hops: npt.NDArray[np.int8]
    days: FloatArray
    changes: IntArray

    @property
    def weight(self) -> float:
        """Case weight = quality × (0.5 + mean relevance)."""
        return self.quality * (0.5 + float(self.relevance.mean()))


def jaccard(co: FloatArray, a: FloatArray, b: FloatArray) -> FloatArray:
    """Co-change Jaccard |A∩B| / |A∪B| = co / (a + b − co); 0 where nothing was seen."""
    union = a + b - co
    return np.divide(co, union, out=np.zeros_like(co), where=union > 0)


@dataclass(frozen=True)
class _CommitView:
    """What the seeds of one commit share: node features and co-change counts."""

    candidate: Candidate
    tree: str
    graph: TreeGraph
    index: dict[str, int]
    small: FloatArray
    ident: BoolArray

    def co_changes(self, seed: str) -> tuple[FloatArray, FloatArray]:
        """(co-change counts with ``seed``, Jaccard with ``seed``) per node."""
        partners = self.candidate.partners.get(seed, {})
        co = np.array([float(partners.get(p, 0)) for p in self.graph.paths])
        seed_count = np.full_like(co, self.small[self.index[seed]])
        return co, jaccard(co, seed_count, self.small)


def _node_array(graph: TreeGraph, values: dict[str, int], missing: float) -> FloatArray:
    return np.array([float(values.get(p, missing)) for p in graph.paths])


def _mentions(graph: TreeGraph, tokens: frozenset[str], store: TagStore) -> tuple[
        BoolArray, BoolArray]:
    """(files defining a mentioned identifier, files whose name stem is a query token)."""
    ids = [store.lower_names[t] for t in tokens if t in store.lower_names]
    ident = np.zeros(graph.size, np.bool_)
    ident[graph.def_nodes[np.isin(graph.def_lower, ids)]] = True
    named = np.array([stem in tokens for stem in graph.stems], np.bool_)
    return ident, named


def _case(view: _CommitView, seed: str, seeds: list[str], shared: tuple[BoolArray, FloatArray,
          IntArray]) -> Case | None:
    others = [view.index[s] for s in seeds if s != seed]
    if not others:
        return None
    co, jacc = view.co_changes(seed)
    s = view.index[seed]
    relevance = np.where(co > 0, jacc, UNSEEN_RELEVANCE)[others]
    order = np.lexsort((np.array(others), -relevance))
    coupled = jacc >= COUPLING_THRESHOLD
    coupled[s] = False
    focus = np.flatnonzero(view.ident | (np.arange(view.graph.size) == s)).astype(np.int32)
    c = view.candidate
    return Case(c.position, c.commit.sha, c.commit.subject, c.quality, view.tree, s,
                np.array(others, np.int32)[order], relevance[order], view.ident, shared[0],
                coupled, hops_from(view.graph, focus), shared[1], shared[2])


def commit_cases(candidate: Candidate, tree: str, graph: TreeGraph, store: TagStore) -> list[Case]:
    """The cases of one candidate commit on its parent tree's graph (seeds whose blob was
    skipped are dropped; a seed with no other seed left yields no case)."""
    index = {p: i for i, p in enumerate(graph.paths)}
    seeds = [s for s in candidate.seeds if s in index]
    ident, named = _mentions(graph, query_tokens(candidate.commit.subject), store)
    small = _node_array(graph, candidate.small_changes, 0)
    view = _CommitView(candidate, tree, graph, index, small, ident)
    last = _node_array(graph, candidate.last_time, np.nan)
    days = np.maximum(0.0, (candidate.commit.time - last) / SECONDS_PER_DAY)
    days[np.isnan(last)] = np.inf
    changes = _node_array(graph, candidate.changes, 0).astype(np.int32)
    cases = [_case(view, s, seeds, (named, days, changes)) for s in seeds]
    return [c for c in cases if c is not None]
