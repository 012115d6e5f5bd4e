"""One pass over first-parent history: the parent tree of each candidate commit and the
git statistics of the commits preceding it (a sliding window), nothing from later."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from ranker.gitio import Change, Commit
from ranker.languages import language_of
from ranker.quality import MIN_QUALITY, commit_quality

HISTORY_COMMITS = 500  # the sliding window of preceding commits behind every case
MAX_COUPLING_FILES = 20  # commits touching more files say nothing about co-change
MIN_CHANGED_FILES, MAX_CHANGED_FILES = 2, 12


@dataclass
class Candidate:
    """A commit that yields cases, with what was known just before it."""

    position: int
    commit: Commit
    quality: float
    parent_files: dict[str, str]  # source files of the parent tree: path -> blob
    seeds: list[str]  # changed source files, as paths in the parent tree
    last_time: dict[str, int]  # parent-tree path -> time of its last change in the window
    changes: dict[str, int]  # parent-tree path -> commits in the window touching it
    small_changes: dict[str, int]  # the same, over commits touching ≤ MAX_COUPLING_FILES
    partners: dict[str, dict[str, int]]  # seed -> path -> co-changes in those commits


@dataclass
class _Window:
    """Statistics over the last HISTORY_COMMITS commits, updated as commits enter and leave."""

    last_position: dict[str, int] = field(default_factory=dict)
    changes: Counter[str] = field(default_factory=Counter)
    small: Counter[str] = field(default_factory=Counter)
    partners: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def apply(self, paths: frozenset[str], sign: int) -> None:
        """Add (sign=1) or remove (sign=-1) one commit's touched source paths."""
        for p in paths:
            self.changes[p] += sign
        if len(paths) > MAX_COUPLING_FILES:
            return
        for p in paths:
            self.small[p] += sign
            for q in paths:
                if q != p:
                    self.partners[p][q] += sign


def touched(commit: Commit) -> frozenset[str]:
    """Source paths a commit touches (both sides of a rename)."""
    paths = {p for c in commit.changes for p in (c.old_path, c.new_path) if p}
    return frozenset(p for p in paths if language_of(p))


def replay(files: dict[str, str], changes: Iterable[Change]) -> None:
    """Apply one commit's first-parent diff to ``{path: blob}`` in place."""
    for c in changes:
        if c.old_path is not None:
            files.pop(c.old_path, None)
        if c.new_path is not None and c.new_mode in ("100644", "100755"):
            files[c.new_path] = c.new_blob


def _quality(commit: Commit) -> float:
    paths = [c.new_path or c.old_path or "" for c in commit.changes]
    if not MIN_CHANGED_FILES <= len(paths) <= MAX_CHANGED_FILES:
        return 0.0
    sources = sum(1 for p in paths if language_of(p))
    return commit_quality(commit.subject, len(commit.parents) > 1, paths, sources)


def _seeds(commit: Commit, parent: dict[str, str]) -> list[str]:
    """Changed source files that exist in the parent tree, by their parent-tree path."""
    olds = {c.old_path for c in commit.changes if c.old_path and language_of(c.old_path)}
    return sorted(p for p in olds if p in parent)


def _candidate(position: int, commit: Commit, window: _Window,
               parent: dict[str, str]) -> Candidate | None:
    quality = _quality(commit)
    seeds = _seeds(commit, parent) if quality >= MIN_QUALITY else []
    if len(seeds) < 2:
        return None
    sources = {p: b for p, b in parent.items() if language_of(p)}
    last = {p: window.last_position[p] for p in sources if p in window.last_position}
    return Candidate(
        position, commit, quality, sources, seeds, last,
        {p: window.changes[p] for p in sources if window.changes[p]},
        {p: window.small[p] for p in sources if window.small[p]},
        {s: {q: n for q, n in window.partners[s].items() if n} for s in seeds},
    )


def scan(log: list[Commit], base: dict[str, str], first_case: int) -> tuple[
        list[Candidate], dict[str, str]]:
    """Walk ``log`` (oldest first) from the files of its first commit's parent: the
    candidates at positions ≥ ``first_case`` and the final tree (HEAD's files).

    ``last_time`` holds positions first; they are turned into commit times at the end.
    """
    files = dict(base)
    window = _Window()
    touches = [touched(c) for c in log]
    found: list[Candidate] = []
    for i, commit in enumerate(log):
        if i >= HISTORY_COMMITS:
            window.apply(touches[i - HISTORY_COMMITS], -1)
        if i >= first_case and (candidate := _candidate(i, commit, window, files)):
            candidate.last_time = {p: log[j].time for p, j in candidate.last_time.items()
                                   if j >= i - HISTORY_COMMITS}
            found.append(candidate)
        window.apply(touches[i], 1)
        window.last_position.update(dict.fromkeys(touches[i], i))
        replay(files, commit.changes)
    return found, files
