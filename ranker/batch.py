"""A split's cases flattened into arrays, so scoring a parameter point is a few numpy passes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp  # type: ignore[import-untyped]

from ranker.cases import Case
from ranker.depth import VENDOR
from ranker.graph import TreeGraph
from ranker.metrics import CaseMeta, case_meta, ideal_dcg

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Solves:
    """The block-diagonal system (I − αM)z = r: one block per (tree, right-hand side), where
    the right-hand sides are each depth class's indicator and each seed's unit vector."""

    matrix: sp.csr_matrix
    rhs: F64
    block_ptr: I64


@dataclass(frozen=True)
class Entries:
    """One row per (case, file of its tree); ``class_index[k]``/``seed_index`` point into
    the solution z (the last slot of the padded z is 0 for absent depth classes)."""

    case: I32
    node: I32
    depth: npt.NDArray[np.int8]
    is_seed: npt.NDArray[np.bool_]
    mentioned_ident: npt.NDArray[np.bool_]
    mentioned_file: npt.NDArray[np.bool_]
    coupled: npt.NDArray[np.bool_]
    hops: npt.NDArray[np.int8]
    days: F64
    changes: F64
    class_index: I64  # (4, entries)
    seed_index: I64
    seed_depth: npt.NDArray[np.int8]  # depth class of the entry's case's seed


@dataclass(frozen=True)
class Pairs:
    """Each expected file of each case against every other non-seed file of the case."""

    expected: I64  # entry of each expected file
    relevance: F64
    case: I64
    pair_expected: I64  # index into ``expected``
    pair_other: I64  # entry
    ideal: F64  # IDCG@10 per case


@dataclass(frozen=True)
class Batch:
    """Everything parameter-independent about scoring one split."""

    cases: tuple[Case, ...]
    solves: Solves
    entries: Entries
    pairs: Pairs
    meta: CaseMeta
    case_ptr: I64  # entries of case c: case_ptr[c]..case_ptr[c+1]


def _columns(cases: tuple[Case, ...], graphs: dict[str, TreeGraph]) -> dict[
        tuple[str, str, int], int]:
    """(tree, "class"|"seed", k) → block number, trees in first-use order."""
    keys: dict[tuple[str, str, int], int] = {}
    for case in cases:
        depth = graphs[case.tree].depth
        for k in range(VENDOR + 1):
            if (depth == k).any():
                keys.setdefault((case.tree, "class", k), len(keys))
        keys.setdefault((case.tree, "seed", case.seed), len(keys))
    return keys


def _solves(keys: dict[tuple[str, str, int], int], graphs: dict[str, TreeGraph]) -> tuple[
        Solves, I64]:
    blocks = list(keys)
    sizes = np.array([graphs[t].size for t, _, _ in blocks], np.int64)
    block_ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    rhs = np.zeros(int(block_ptr[-1]))
    for b, (tree, kind, k) in enumerate(blocks):
        part = rhs[block_ptr[b]:block_ptr[b + 1]]
        if kind == "class":
            part[graphs[tree].depth == k] = 1.0
        else:
            part[k] = 1.0
    matrix = sp.block_diag([graphs[t].transition for t, _, _ in blocks], format="csr")
    return Solves(sp.csr_matrix(matrix), rhs, block_ptr), block_ptr


def _entries(cases: tuple[Case, ...], graphs: dict[str, TreeGraph],
             keys: dict[tuple[str, str, int], int], block_ptr: I64) -> tuple[Entries, I64]:
    sizes = [graphs[c.tree].size for c in cases]
    case_ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    pad = int(block_ptr[-1])

    def start(c: Case, kind: str, k: int) -> int:
        b = keys.get((c.tree, kind, k))
        return -1 if b is None else int(block_ptr[b])

    def flat(pick: list[npt.NDArray[Any]], dtype: type) -> npt.NDArray[Any]:
        return np.concatenate(pick).astype(dtype) if pick else np.zeros(0, dtype)

    node = flat([np.arange(n) for n in sizes], np.int32)
    case = np.repeat(np.arange(len(cases)), sizes).astype(np.int32)
    class_index = np.full((VENDOR + 1, len(node)), pad, np.int64)
    for k in range(VENDOR + 1):
        starts = np.repeat([start(c, "class", k) for c in cases], sizes).astype(np.int64)
        class_index[k] = np.where(starts >= 0, starts + node, pad)
    seed_start = np.repeat([start(c, "seed", c.seed) for c in cases], sizes).astype(np.int64)
    is_seed = node == np.repeat([c.seed for c in cases], sizes)
    entries = Entries(
        case, node, flat([graphs[c.tree].depth for c in cases], np.int8), is_seed,
        flat([c.mentioned_ident for c in cases], np.bool_),
        flat([c.mentioned_file for c in cases], np.bool_),
        flat([c.coupled for c in cases], np.bool_), flat([c.hops for c in cases], np.int8),
        flat([c.days for c in cases], np.float64), flat([c.changes for c in cases], np.float64),
        class_index, seed_start + node,
        np.repeat([graphs[c.tree].depth[c.seed] for c in cases], sizes).astype(np.int8),
    )
    return entries, case_ptr


def _pairs(cases: tuple[Case, ...], case_ptr: I64, is_seed: npt.NDArray[np.bool_]) -> Pairs:
    expected = np.concatenate([case_ptr[i] + c.expected for i, c in enumerate(cases)])
    relevance = np.concatenate([c.relevance for c in cases])
    owner = np.repeat(np.arange(len(cases)), [len(c.expected) for c in cases])
    sizes = np.diff(case_ptr)[owner]
    pair_expected = np.repeat(np.arange(len(expected)), sizes)
    starts = np.repeat(case_ptr[owner], sizes)
    within = np.arange(len(pair_expected)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    pair_other = starts + within
    keep = (pair_other != expected[pair_expected]) & ~is_seed[pair_other]
    ideal = np.array([ideal_dcg(c.relevance) for c in cases])
    return Pairs(expected.astype(np.int64), relevance, owner.astype(np.int64),
                 pair_expected[keep].astype(np.int64), pair_other[keep].astype(np.int64), ideal)


def build_batch(cases: list[Case], graphs: dict[str, TreeGraph]) -> Batch:
    """Flatten a split's cases (ordered by commit, then seed) into a Batch."""
    ordered = tuple(sorted(cases, key=lambda c: (c.position, c.seed)))
    keys = _columns(ordered, graphs)
    solves, block_ptr = _solves(keys, graphs)
    entries, case_ptr = _entries(ordered, graphs, keys, block_ptr)
    positions = np.array([c.position for c in ordered], np.int64)
    commit_of_case = np.unique(positions, return_inverse=True)[1].astype(np.int64)
    weights = np.array([c.weight for c in ordered], np.float64)
    return Batch(ordered, solves, entries, _pairs(ordered, case_ptr, entries.is_seed),
                 case_meta(weights, commit_of_case), case_ptr)
