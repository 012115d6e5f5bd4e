"""A deterministic Python implementation of ripmap's file ranking and of ripmap-train's
retrocausal-oracle cases, over any git repository.

    repo = open_repository(path, cache_dir, window=2000, progress=None)
    ev = repo.evaluate(ParameterPoint(), cases="tuning")   # ev.ndcg, ev.low, ev.high
    repo.failures(point), repo.sensitivity(point), paired_interval(a, b, repo, "tuning")

Choices made where ripmap is unclear or defective (each one deliberate):

- Tags: the grammar wheels' TAGS_QUERY, matches paired per match; TypeScript/TSX use the
  typescript wheel's query plus JavaScript's (the former has no classes/functions/calls).
  Kept kinds: definitions class/function/method/interface/module/macro, references
  call/class/implementation; so Go's ``definition.type`` and Python's module-level
  constants are not definitions. Names under 2 characters are dropped.
- Nodes are the source files (a grammar exists) of the parent tree; files over 1 MB or
  with a NUL byte in the first 8 kB are skipped (not nodes); other files are untagged and
  not ranked. ``file_count``/``languages``/``untagged_files``/``skipped_files`` describe
  HEAD's tree.
- Vendor directories match whole path components (``targets.py`` is not vendored, ripmap's
  substring match would say it is).
- PageRank: x = normalise((I − αPᵀ)⁻¹p), the fixed point of networkx's iteration with
  teleport and dangling mass to p. It is linear in p, so each tree is solved once per
  depth class and once per seed, cached per α, and a point only mixes the solutions.
  The system is solved directly (one sparse LU of all distinct trees, the depth classes
  and seeds as columns of one right-hand side, then two iterations z ← αPᵀz + p that make
  structurally identical files bitwise tied again), so x is the fixed point to a few ulps
  at every α < 1 (networkx at any tol converges to it) and depends on nothing solved
  before. Index format 1 iterated to networkx's N·1e-8 criterion, capped at 100
  iterations: the same rankings up to α 0.85, but unconverged from α ≈ 0.9 on.
- Focus expansion: the focus set (seed and files defining mentioned identifiers) is hop
  0 with weight 1, as in ripmap's expand_via_graph, so it gets max(1, boost) too.
  ``focus_max_hops`` is compared as a float (h ≤ value); ripmap rounds it.
- Git weight: history is the 500 first-parent commits before the case's commit (merges
  count by their first-parent diff), followed by path (a rename starts a new history).
  Files not changed in that window get recency 1 and churn 1. Churn counts every commit;
  co-change (coupling, relevance) ignores commits touching more than 20 files.
  The churn formula is bounded by ``git_churn_max_boost`` from above when it is ≥ 1 and
  from below when it is < 1, so a file without excess churn always has churn 1.
- Cases: a merge counts as a commit with its first-parent diff and weight ×0.3; its query
  is its subject (often "Merge pull request …"). Seeds are changed source files present in
  the parent tree (renamed files by their old path, deleted ones included; added files
  cannot be seeds or expected). Message words match whole words or prefixes
  ("formatting"), not substrings ("information" is no format commit).
- Split: the oldest 70 % of the window's commits give tuning cases, the rest held-out;
  every feature of a case comes from history strictly before its commit.
"""

from ranker.errors import RepositoryError
from ranker.evaluation import Effect, Evaluation, Sensitivity
from ranker.metrics import CaseMeta
from ranker.repository import Repository, open_repository, paired_interval

__all__ = [
    "CaseMeta",
    "Effect",
    "Evaluation",
    "Repository",
    "RepositoryError",
    "Sensitivity",
    "open_repository",
    "paired_interval",
]
