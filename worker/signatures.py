"""Deterministic features of a ranking failure: the seed's pattern-detection stub, done.

Each detector looks at one failure and names a pattern in words the reasoner (and an
operator) can read; the scratchpad counts how often each pattern recurs.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from schemas.failures import RankingFailure

VENDOR_PARTS = frozenset(
    {"vendor", "node_modules", "third_party", "thirdparty", "external", "deps", "target", "dist"}
)
Detector = Callable[[RankingFailure], bool]


# Plain string operations, not pathlib: these run for every path of every failure.
def _clean(path: str) -> str:
    return path.strip("/").removeprefix("./")


def depth(path: str) -> int:
    """Directory depth: 0 for a root-level file."""
    return _clean(path).count("/")


def parent(path: str) -> str:
    """The directory a file sits in ('' at the root)."""
    return _clean(path).rpartition("/")[0]


def is_vendor(path: str) -> bool:
    """True for files under a vendored or generated directory."""
    return any(part in VENDOR_PARTS for part in _clean(path).split("/")[:-1])


def _mean_depth(paths: list[str]) -> float:
    return sum(depth(p) for p in paths) / len(paths) if paths else 0.0


def _root_crowding(f: RankingFailure) -> bool:
    roots = sum(1 for p in f.actual_top if depth(p) == 0 and p not in f.expected_top)
    return roots >= 2 or (roots >= 1 and len(f.actual_top) <= 3)


def _vendor_crowding(f: RankingFailure) -> bool:
    return any(is_vendor(p) for p in f.actual_top[:10])


def _seed_dominates(f: RankingFailure) -> bool:
    return f.seed_file in f.actual_top[:2] and f.seed_file not in f.expected_top


def _terms_missed(f: RankingFailure) -> bool:
    terms = {t for t in re.findall(r"[a-z0-9]{3,}", f.query.lower())}
    in_expected = any(t in p.lower() for t in terms for p in f.expected_top)
    in_actual = any(t in p.lower() for t in terms for p in f.actual_top)
    return in_expected and not in_actual


def _colocated(f: RankingFailure) -> bool:
    seed_dir = parent(f.seed_file)
    return sum(parent(p) == seed_dir for p in f.expected_top) * 2 > len(f.expected_top)


def _expected_deeper(f: RankingFailure) -> bool:
    return bool(f.actual_top) and _mean_depth(f.expected_top) >= _mean_depth(f.actual_top) + 1


def _no_overlap(f: RankingFailure) -> bool:
    return not set(f.expected_top) & set(f.actual_top)


def _bug_fix(f: RankingFailure) -> bool:
    return re.search(r"\b(fix|bug|regression|hotfix)", f.commit_message.lower()) is not None


def _severe(f: RankingFailure) -> bool:
    return f.ndcg < 0.2


DETECTORS: dict[str, Detector] = {
    "root-level files crowd the top ranks ahead of nested expected files": _root_crowding,
    "vendor or generated files appear in the top ranks": _vendor_crowding,
    "the seed file itself dominates the top ranks": _seed_dominates,
    "query terms appear in expected paths but in no top-ranked path": _terms_missed,
    "expected files are co-located with the seed file": _colocated,
    "expected files sit deeper in the tree than the top-ranked ones": _expected_deeper,
    "no expected file reached the top ranks at all": _no_overlap,
    "the commit is a bug fix (co-change evidence is strong)": _bug_fix,
    "severe failure: NDCG below 0.2": _severe,
}


def signatures(failure: RankingFailure) -> list[str]:
    """The names of every pattern this failure shows."""
    return [name for name, detect in DETECTORS.items() if detect(failure)]


def batch_signatures(failures: list[RankingFailure]) -> dict[str, int]:
    """Pattern -> how many failures of the batch show it."""
    counts: dict[str, int] = {}
    for failure in failures:
        for name in signatures(failure):
            counts[name] = counts.get(name, 0) + 1
    return counts
