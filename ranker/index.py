"""The per-repository index: built once, cached on disk, extended when commits arrive."""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ranker.batch import Batch, build_batch
from ranker.cases import Case, commit_cases
from ranker.errors import RepositoryError
from ranker.gitio import Commit, first_parent_log, head, read_blobs, tree_files
from ranker.graph import TreeGraph, build_graph
from ranker.history import HISTORY_COMMITS, Candidate, scan
from ranker.languages import language_of
from ranker.tags import extract_tags, is_skipped
from ranker.tagstore import TagStore

FORMAT_VERSION = 2
TUNING_FRACTION = 0.7
MIN_USABLE_COMMITS = 10
SPLITS = ("tuning", "heldout")
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class HeadStats:
    """What HEAD's tree holds: every file, those with a grammar by language, the rest."""

    file_count: int
    languages: dict[str, int]
    untagged_files: int
    skipped_files: int


@dataclass
class Index:
    """Everything parameter-independent about one repository's evaluation."""

    head: str
    window: int
    store: TagStore
    stats: HeadStats
    batches: dict[str, Batch]
    graphs: dict[str, TreeGraph]
    window_commits: int
    parsed_blobs: int = 0  # blobs parsed by the build that produced this index
    version: int = field(default=FORMAT_VERSION)


def cache_path(cache_dir: Path, repo: Path) -> Path:
    """``<cache_dir>/<hash of the repository's absolute path>/index-v<N>.pkl``."""
    key = hashlib.sha256(str(repo.resolve()).encode()).hexdigest()[:16]
    return cache_dir / key / f"index-v{FORMAT_VERSION}.pkl"


def load(path: Path) -> Index | None:
    """The cached index, or None when absent, unreadable or of another format version."""
    try:
        with path.open("rb") as f:
            index = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return None
    return index if isinstance(index, Index) and index.version == FORMAT_VERSION else None


def save(index: Index, path: Path) -> None:
    """Write atomically (temp file + rename), so a reader never sees half an index."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        pickle.dump(index, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def _parse_new(repo: Path, blobs: dict[str, str], store: TagStore,
               progress: Progress | None) -> int:
    """Parse the blobs (id → language) the store lacks; returns how many were parsed."""
    todo = sorted(b for b in blobs if b not in store.blobs)
    for done, (blob, data) in enumerate(read_blobs(repo, todo), 1):
        store.add(blob, None if is_skipped(data) else extract_tags(data, blobs[blob]))
        if progress and (done % 50 == 0 or done == len(todo)):
            progress("tags", done, len(todo))
    return len(todo)


def _needed_blobs(candidates: list[Candidate], final: dict[str, str]) -> dict[str, str]:
    blobs: dict[str, str] = {}
    for files in [c.parent_files for c in candidates] + [final]:
        for path, blob in files.items():
            if (lang := language_of(path)) is not None:
                blobs[blob] = lang
    return blobs


def _head_stats(final: dict[str, str], store: TagStore) -> HeadStats:
    langs = Counter(lang for p in final if (lang := language_of(p)))
    skipped = sum(1 for p, b in final.items() if language_of(p) and store.blobs.get(b) is None)
    return HeadStats(len(final), dict(sorted(langs.items())), len(final) - langs.total(), skipped)


def _graphs(candidates: list[Candidate], log: list[Commit], store: TagStore,
            known: dict[str, TreeGraph]) -> dict[str, TreeGraph]:
    lower = store.lower_id_array()
    graphs: dict[str, TreeGraph] = {}
    for c in candidates:
        tree = log[c.position - 1].tree
        if tree not in graphs:
            files = {p: b for p, b in c.parent_files.items() if store.blobs.get(b) is not None}
            graphs[tree] = known.get(tree) or build_graph(files, store, lower)
    return graphs


def _split_cases(candidates: list[Candidate], log: list[Commit], graphs: dict[str, TreeGraph],
                 store: TagStore, split_at: int) -> dict[str, list[Case]]:
    split: dict[str, list[Case]] = {name: [] for name in SPLITS}
    for c in candidates:
        tree = log[c.position - 1].tree
        name = SPLITS[0] if c.position < split_at else SPLITS[1]
        split[name].extend(commit_cases(c, tree, graphs[tree], store))
    return split


def _check_usable(split: dict[str, list[Case]], window_commits: int) -> None:
    usable = {name: len({c.position for c in cases}) for name, cases in split.items()}
    total = sum(usable.values())
    if total < MIN_USABLE_COMMITS or min(usable.values()) == 0:
        raise RepositoryError(
            f"too few usable commits: found {total} ({usable['tuning']} tuning, "
            f"{usable['heldout']} held out) among the last {window_commits} first-parent "
            f"commits; need at least {MIN_USABLE_COMMITS}, with at least one in each split "
            "(a usable commit changes 2-12 files, at least 2 of them source files that exist "
            "in its parent tree, and is not a formatting/lint commit)"
        )


def build(repo: Path, window: int, previous: Index | None, progress: Progress | None,
          rev: str = "HEAD") -> Index:
    """Build the index of the history up to ``rev``, reusing ``previous``'s parsed tags and
    tree graphs."""
    sha = head(repo, rev)
    log = first_parent_log(repo, window + HISTORY_COMMITS, sha)
    first_case = max(0, len(log) - window)
    if progress:
        progress("history", 0, len(log))
    base = tree_files(repo, log[0].parents[0]) if log and log[0].parents else {}
    candidates, final = scan(log, base, first_case)
    store = previous.store if previous else TagStore()
    parsed = _parse_new(repo, _needed_blobs(candidates, final), store, progress)
    graphs = _graphs(candidates, log, store, previous.graphs if previous else {})
    window_commits = len(log) - first_case
    split = _split_cases(candidates, log, graphs, store,
                         first_case + int(TUNING_FRACTION * window_commits))
    _check_usable(split, window_commits)
    if progress:
        progress("cases", 1, 1)
    batches = {name: build_batch(cases, graphs) for name, cases in split.items()}
    return Index(sha, window, store, _head_stats(final, store), batches, graphs,
                 window_commits, parsed)
