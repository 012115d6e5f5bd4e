"""The ranker's formulas: PageRank against networkx, NDCG, bootstrap, tags, query tokens."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ranker.boosts import churn, focus_expansion, recency
from ranker.metrics import case_meta, dcg, ideal_dcg, paired, resample_counts
from ranker.pagerank import pagerank, transition_matrix
from ranker.quality import commit_quality
from ranker.query import query_tokens
from ranker.tags import extract_tags, is_skipped

Edges = list[tuple[int, int, int]]


@st.composite
def graphs(draw: st.DrawFn) -> tuple[int, Edges, list[float]]:
    n = draw(st.integers(1, 9))
    pairs = [(u, v) for u in range(n) for v in range(n) if u != v]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=len(pairs))) if pairs \
        else []
    edges = [(u, v, draw(st.integers(1, 5))) for u, v in chosen]
    p = draw(st.lists(st.floats(0.0, 10.0), min_size=n, max_size=n))
    assume(sum(p) > 0.1)
    return n, edges, p


def _networkx(n: int, edges: Edges, p: list[float], alpha: float) -> np.ndarray:
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_weighted_edges_from(edges)
    pers = dict(enumerate(p))
    try:
        # networkx's default tol=1e-6 (N·tol on the L1 change) leaves its own result up to
        # ~1.4e-6 from the fixed point (7 nodes, one edge, alpha 0.75); compare at tol=1e-10
        x = nx.pagerank(g, alpha, personalization=pers, dangling=pers, weight="weight",
                        tol=1e-10, max_iter=10_000)
    except nx.PowerIterationFailedConvergence:
        assume(False)
    return np.array([x[i] for i in range(n)])


def _assert_batch_matches_networkx(batch: list[tuple[int, Edges, list[float]]],
                                   alpha: float) -> None:
    blocks, expected = [], []
    for n, edges, p in batch:
        u, v, w = zip(*edges, strict=True) if edges else ((), (), ())
        blocks.append(transition_matrix(sp.coo_matrix((w, (u, v)), shape=(n, n))))
        expected.append(_networkx(n, edges, p, alpha))
    ptr = np.concatenate([[0], np.cumsum([n for n, _, _ in batch])]).astype(np.int64)
    got = pagerank(sp.block_diag(blocks, format="csr"), np.concatenate([p for *_, p in batch]),
                   ptr, alpha)
    np.testing.assert_allclose(got, np.concatenate(expected), atol=1e-6, rtol=0)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.lists(graphs(), min_size=1, max_size=4), st.floats(0.3, 0.85))
def test_pagerank_equals_networkx_on_block_diagonal_batches(
        batch: list[tuple[int, Edges, list[float]]], alpha: float) -> None:
    _assert_batch_matches_networkx(batch, alpha)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(graphs(), min_size=1, max_size=3), st.floats(0.85, 0.99))
def test_pagerank_equals_networkx_at_high_alpha(
        batch: list[tuple[int, Edges, list[float]]], alpha: float) -> None:
    # the direct solve is the fixed point at any alpha < 1, where 100 power iterations
    # (the index format 1 solver) were up to 48 % off on flask at 0.99
    _assert_batch_matches_networkx(batch, alpha)


def test_pagerank_keeps_structurally_identical_nodes_tied() -> None:
    # nodes 0 and 7 have the same in- and out-edges and personalization; the LU eliminates
    # them at different times (their values then differ in the last bits at 0.85), the
    # closing iterations make them bitwise equal again, as the path tie-break expects
    weights = np.array([[0, 2, 0, 1, 1, 0, 0, 0], [0, 0, 0, 2, 0, 0, 0, 0],
                        [0, 2, 0, 0, 0, 0, 0, 0], [3, 0, 0, 0, 3, 0, 0, 3],
                        [2, 3, 0, 0, 0, 1, 2, 2], [3, 0, 1, 0, 2, 0, 0, 3],
                        [3, 0, 0, 0, 3, 0, 0, 3], [0, 2, 0, 1, 1, 0, 0, 0]], np.float64)
    p = [0.3, 1.0, 0.3, 0.8, 0.2, 0.6, 1.0, 0.3]
    m = transition_matrix(sp.csr_matrix(weights))
    edges = [(u, v, int(weights[u, v])) for u, v in zip(*np.nonzero(weights), strict=True)]
    for alpha in (0.3, 0.85, 0.99):
        x = pagerank(m, np.array(p), np.array([0, 8]), alpha)
        assert x[0] == x[7]
        np.testing.assert_allclose(x, _networkx(8, edges, p, alpha), atol=1e-6, rtol=0)


def test_pagerank_dangling_mass_goes_to_personalization() -> None:
    # 0 → 1, node 1 dangling; all personalization on 0
    m = transition_matrix(sp.csr_matrix(np.array([[0.0, 1.0], [0.0, 0.0]])))
    x = pagerank(m, np.array([1.0, 0.0]), np.array([0, 2]), 0.5)
    # x1 = 0.5 x0, x0 = 0.5 + 0.5 x1  →  x0 = 2/3, x1 = 1/3
    np.testing.assert_allclose(x, [2 / 3, 1 / 3], atol=1e-8)


def test_dcg_and_ideal_dcg_by_hand() -> None:
    rel = np.array([0.5, 0.2, 0.9])
    ranks = np.array([0, 3, 12])  # the third is below the cut-off
    assert dcg(rel, ranks, np.zeros(3, np.int64), 1)[0] == pytest.approx(0.5 + 0.2 / math.log2(5))
    assert ideal_dcg(rel) == pytest.approx(0.9 + 0.5 / math.log2(3) + 0.2 / 2)
    assert ideal_dcg(np.ones(12)) == pytest.approx(sum(1 / math.log2(i + 2) for i in range(10)))


def test_bootstrap_resamples_whole_commits() -> None:
    counts = resample_counts(7, resamples=50)
    assert counts.shape == (50, 7) and (counts.sum(axis=1) == 7).all()
    values = np.repeat(np.linspace(0.0, 1.0, 20), 5)  # 20 commits of 5 equal cases
    weights = np.ones(100)
    by_commit = case_meta(weights, np.repeat(np.arange(20), 5))
    by_case = case_meta(weights, np.arange(100))
    low, high = by_commit.interval(values)
    case_low, case_high = by_case.interval(values)
    assert low <= by_commit.weighted_mean(values) <= high
    # cases of one commit move together: the commit bootstrap is ~√5 times wider
    assert high - low > 1.8 * (case_high - case_low)
    assert by_commit.interval(values) == (low, high)  # fixed seed


def test_paired_difference_is_exact_for_a_constant_shift() -> None:
    meta = case_meta(np.array([1.0, 2.0, 3.0]), np.array([0, 0, 1]))
    a = np.array([0.4, 0.6, 0.8])
    diff, low, high = paired(meta, a, a - 0.25)
    assert (diff, low, high) == pytest.approx((0.25, 0.25, 0.25))


def test_boost_formulas() -> None:
    assert recency(np.array([0.0, np.inf]), 10.0, 30.0).tolist() == [10.0, 1.0]
    assert recency(np.array([30.0]), 10.0, 30.0)[0] == pytest.approx(1 + 9 / math.e)
    c = churn(np.array([0.0, 12.0, 1e9]), 10.0, 5.0)
    assert c[0] == 1.0 and c[1] == pytest.approx(1 + math.log(3) * 4 / 5) and c[2] == 5.0
    assert churn(np.array([0.0, 1e9]), 10.0, 0.5).tolist() == [1.0, 0.5]
    f = focus_expansion(np.array([0, 1, 2, 3, 127], np.int8), 5.0, 0.5, 2.0)
    assert f.tolist() == [5.0, 2.5, 1.25, 1.0, 1.0]
    assert focus_expansion(np.array([1], np.int8), 5.0, 0.1, 2.0).tolist() == [1.0]


def test_query_tokens_drop_stopwords_and_split_identifiers() -> None:
    tokens = query_tokens("Fix url_for with getHTTPValue; add it to app.py")
    assert tokens == {"url_for", "url", "gethttpvalue", "http", "value", "app"}


def test_commit_quality_weights() -> None:
    files = ["a/x.py", "b/y.py"]
    assert commit_quality("fix crash", False, files, 2) == pytest.approx(1.8)
    assert commit_quality("Add feature", False, files, 2) == pytest.approx(1.44)
    assert commit_quality("Run black formatting", False, files, 2) == 0.0
    assert commit_quality("Improve information", False, files, 2) == pytest.approx(1.2)
    assert commit_quality("Merge pull request #1", True, files, 2) == pytest.approx(0.36)
    assert commit_quality("fix", False, ["a/x.py", "b/y.md", "c/z.md", "d/w.md"], 1) == \
        pytest.approx(1.5 * 1.2 * 1.2 * 0.5)


@pytest.mark.parametrize(("language", "source", "definitions", "references"), [
    ("python", b"class Foo:\n    def bar(self): baz(1); x()\n", {"Foo", "bar"}, {"baz"}),
    ("rust", b"struct Sx; trait Tr {} impl Tr for Sx {}\nfn go() { run(); mc!(); }\n",
     {"Sx", "Tr", "go"}, {"run", "Tr", "mc"}),
    ("javascript", b"class Ab { mm() { ff(); } }\nfunction gg() { new Ab(); require('z'); }\n",
     {"Ab", "mm", "gg"}, {"ff", "Ab"}),
    ("typescript", b"interface Ii { xx(): void }\nclass Cc implements Ii {}\nfunction hh() {}\n",
     {"Ii", "Cc", "hh", "xx"}, set()),
    ("go", b"package p\ntype Tt struct{}\nfunc Ff() { Gg() }\nfunc Gg() {}\n", {"Ff", "Gg"},
     {"Gg"}),
])
def test_tags_pair_names_with_their_kinds(language: str, source: bytes,
                                          definitions: set[str], references: set[str]) -> None:
    tags = extract_tags(source, language)
    assert set(tags.definitions) == definitions
    assert {name for name, _ in tags.references} == references


def test_binary_and_oversized_files_are_skipped() -> None:
    assert is_skipped(b"abc\0def") and is_skipped(b"x" * 1_000_001)
    assert not is_skipped(b"def f(): pass\n")
