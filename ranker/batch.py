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
from ranker.pagerank import System, prepare

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Solves:
    """The system (I − αM)Z = R: M block-diagonal with one block per tree (each once, in
    the system's fill-reducing order), R one column per right-hand side of a tree (each
    depth class's indicator, then each seed's unit vector), zero past a tree's own ones."""

    system: System
    rhs: F64  # (system.size, columns)


@dataclass(frozen=True)
class Entries:
    """One row per (case, file of its tree); ``class_index[k]``/``seed_index`` point into
    the flattened solution Z (the last slot of the padded Z is 0 for absent depth classes)."""

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
    """(tree, "class"|"seed", k) → column of that tree's right-hand sides, trees and their
    columns in first-use order."""
    keys: dict[tuple[str, str, int], int] = {}
    used: dict[str, int] = {}

    def add(key: tuple[str, str, int]) -> None:
        if key not in keys:
            keys[key] = used.get(key[0], 0)
            used[key[0]] = keys[key] + 1

    for case in cases:
        depth = graphs[case.tree].depth
        for k in range(VENDOR + 1):
            if (depth == k).any():
                add((case.tree, "class", k))
        add((case.tree, "seed", case.seed))
    return keys


def _solves(keys: dict[tuple[str, str, int], int], graphs: dict[str, TreeGraph]) -> tuple[
        Solves, dict[str, int], I64]:
    """The system, each tree's first row before ordering, and each original row's
    position in the system's order."""
    trees = list(dict.fromkeys(t for t, _, _ in keys))
    sizes = [graphs[t].size for t in trees]
    starts = dict(zip(trees, np.cumsum([0, *sizes[:-1]]).tolist(), strict=True)) if trees else {}
    size = sum(sizes)
    columns = max(keys.values(), default=-1) + 1
    rhs = np.zeros((size, columns))
    for (tree, kind, k), column in keys.items():
        part = rhs[starts[tree]:starts[tree] + graphs[tree].size, column]
        if kind == "class":
            part[graphs[tree].depth == k] = 1.0
        else:
            part[k] = 1.0
    system = prepare(sp.block_diag([graphs[t].transition for t in trees], format="csr")
                     if trees else sp.csr_matrix((0, 0)))
    position = np.empty(size, np.int64)
    position[system.order] = np.arange(size)
    return Solves(system, rhs[system.order]), starts, position


def _entries(cases: tuple[Case, ...], graphs: dict[str, TreeGraph],
             keys: dict[tuple[str, str, int], int], starts: dict[str, int], position: I64,
             columns: int) -> tuple[Entries, I64]:
    sizes = [graphs[c.tree].size for c in cases]
    case_ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    pad = len(position) * columns

    def flat(pick: list[npt.NDArray[Any]], dtype: type) -> npt.NDArray[Any]:
        return np.concatenate(pick).astype(dtype) if pick else np.zeros(0, dtype)

    node = flat([np.arange(n) for n in sizes], np.int32)
    case = np.repeat(np.arange(len(cases)), sizes).astype(np.int32)
    row = position[np.repeat([starts[c.tree] for c in cases], sizes).astype(np.int64) + node]

    def index(kind: str, k_of: list[int]) -> I64:
        column = [keys.get((c.tree, kind, k), -1) for c, k in zip(cases, k_of, strict=True)]
        col = np.repeat(column, sizes).astype(np.int64)
        return np.where(col >= 0, row * columns + col, pad)

    class_index = np.stack([index("class", [k] * len(cases)) for k in range(VENDOR + 1)])
    is_seed = node == np.repeat([c.seed for c in cases], sizes)
    entries = Entries(
        case, node, flat([graphs[c.tree].depth for c in cases], np.int8), is_seed,
        flat([c.mentioned_ident for c in cases], np.bool_),
        flat([c.mentioned_file for c in cases], np.bool_),
        flat([c.coupled for c in cases], np.bool_), flat([c.hops for c in cases], np.int8),
        flat([c.days for c in cases], np.float64), flat([c.changes for c in cases], np.float64),
        class_index, index("seed", [c.seed for c in cases]),
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
    solves, starts, position = _solves(keys, graphs)
    entries, case_ptr = _entries(ordered, graphs, keys, starts, position,
                                 solves.rhs.shape[1])
    positions = np.array([c.position for c in ordered], np.int64)
    commit_of_case = np.unique(positions, return_inverse=True)[1].astype(np.int64)
    weights = np.array([c.weight for c in ordered], np.float64)
    return Batch(ordered, solves, entries, _pairs(ordered, case_ptr, entries.is_seed),
                 case_meta(weights, commit_of_case), case_ptr)
