"""A repository's features for the presets' conditions, read from its cached index.

Nothing is re-read from git: HEAD's statistics give the language mix and the file count;
the newest tuning-side tree gives directory depth and the vendored share; the tuning
cases give the history length and the co-change density. Nothing comes from the held-out
commits, so a preset chosen by these features never saw them.
"""

from __future__ import annotations

import numpy as np

from ranker.depth import is_vendored
from ranker.index import TUNING_FRACTION, Index
from ranker.repository import Repository
from schemas.features import RepoFeatures


def repository_features(repo: Repository) -> RepoFeatures:
    """The features of an opened repository (``ranker.open_repository``)."""
    return index_features(repo.index)


def index_features(index: Index) -> RepoFeatures:
    """The features of one repository's index."""
    languages = index.stats.languages
    sources = sum(languages.values())
    shares = {k: round(v / sources, 4) for k, v in sorted(languages.items())} if sources else {}
    tuning = index.batches["tuning"].cases
    newest = max(tuning, key=lambda c: c.position) if tuning else None
    paths = index.graphs[newest.tree].paths if newest is not None else ()
    depth = float(np.mean([p.count("/") for p in paths])) if paths else 0.0
    vendored = float(np.mean([is_vendored(p) for p in paths])) if paths else 0.0
    coupled = [float(c.coupled[c.expected].mean()) for c in tuning if len(c.expected)]
    return RepoFeatures(
        languages=shares,
        file_count=index.stats.file_count,
        mean_depth=round(depth, 4),
        history_commits=int(TUNING_FRACTION * index.window_commits),
        co_change_density=round(float(np.mean(coupled)) if coupled else 0.0, 4),
        vendored_share=round(vendored, 4),
    )
