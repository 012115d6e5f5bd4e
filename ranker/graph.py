"""The file graph of one tree: who references names defined where."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp  # type: ignore[import-untyped]

from ranker.depth import depth_classes
from ranker.tagstore import BlobTags, IntArray, TagStore

MAX_RESOLVED_DEFINERS = 3
MAX_HOPS = 10
UNREACHED = 127


@dataclass(frozen=True)
class TreeGraph:
    """Files of a tree (sorted paths) with their reference graph.

    ``transition`` is Pᵀ with P[u, v] = w(u→v) / Σ_x w(u→x) (rows of dangling u are zero);
    ``resolved`` is the undirected 0/1 adjacency over references to names defined in at
    most ``MAX_RESOLVED_DEFINERS`` files; ``def_nodes``/``def_lower`` list who defines
    which lower-cased name.
    """

    paths: tuple[str, ...]
    stems: tuple[str, ...]
    depth: npt.NDArray[np.int8]
    transition: sp.csr_matrix
    resolved: sp.csr_matrix
    def_nodes: IntArray
    def_lower: IntArray

    @property
    def size(self) -> int:
        """Number of files."""
        return len(self.paths)


def _concat(parts: list[IntArray]) -> IntArray:
    return np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)


def _edges(tags: list[BlobTags]) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """(u, v, weight, definers) for each reference in u to a name defined in v ≠ u."""
    def_node = _concat([np.full(len(t.definitions), i, np.int32) for i, t in enumerate(tags)])
    def_name = _concat([t.definitions for t in tags])
    order = np.argsort(def_name, kind="stable")
    def_node, def_name = def_node[order], def_name[order]
    ref_node = _concat([np.full(len(t.references), i, np.int32) for i, t in enumerate(tags)])
    ref_name = _concat([t.references for t in tags])
    ref_count = _concat([t.counts for t in tags])
    lo = np.searchsorted(def_name, ref_name, "left")
    n = np.searchsorted(def_name, ref_name, "right") - lo
    which = np.repeat(np.arange(len(ref_name)), n)
    offsets = np.cumsum(n) - n
    v = def_node[lo[which] + np.arange(len(which)) - offsets[which]]
    u, w, k = ref_node[which], ref_count[which], n[which]
    keep = u != v
    return u[keep], v[keep], w[keep], k[keep].astype(np.int32)


def build_graph(files: dict[str, str], store: TagStore, lower: IntArray) -> TreeGraph:
    """The graph of a tree from ``{path: blob}`` of its parsed, non-skipped source files."""
    paths = tuple(sorted(files))
    empty = BlobTags(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int32))
    tags = [store.blobs.get(files[p]) or empty for p in paths]
    n = len(paths)
    u, v, w, k = _edges(tags)
    weights = sp.coo_matrix((w.astype(np.float64), (u, v)), shape=(n, n)).tocsr()
    out = np.asarray(weights.sum(axis=1)).ravel()
    scale = np.divide(1.0, out, out=np.zeros(n), where=out > 0)
    transition = sp.csr_matrix(sp.diags(scale) @ weights).T.tocsr()
    r = k <= MAX_RESOLVED_DEFINERS
    ones = np.ones(2 * int(r.sum()))
    resolved = sp.coo_matrix(
        (ones, (np.r_[u[r], v[r]], np.r_[v[r], u[r]])), shape=(n, n)
    ).tocsr()
    resolved.data[:] = 1.0
    def_nodes = _concat([np.full(len(t.definitions), i, np.int32) for i, t in enumerate(tags)])
    def_lower = lower[_concat([t.definitions for t in tags])]
    stems = tuple(PurePosixPath(p).name.split(".")[0].lower() for p in paths)
    return TreeGraph(paths, stems, depth_classes(paths), transition, resolved, def_nodes,
                     def_lower.astype(np.int32))


def hops_from(graph: TreeGraph, sources: IntArray) -> npt.NDArray[np.int8]:
    """Breadth-first hop count from ``sources`` over the resolved graph (UNREACHED beyond
    ``MAX_HOPS``); sources are at hop 0."""
    hops = np.full(graph.size, UNREACHED, np.int8)
    hops[sources] = 0
    frontier = np.zeros(graph.size)
    frontier[sources] = 1.0
    for hop in range(1, MAX_HOPS + 1):
        reached = (graph.resolved @ frontier > 0) & (hops == UNREACHED)
        if not reached.any():
            break
        hops[reached] = hop
        frontier = reached.astype(np.float64)
    return hops
