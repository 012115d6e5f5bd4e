"""Repository features kept for the presets, and the latest wisdom's recommendation."""

from __future__ import annotations

from typing import cast

import redis

from schemas.features import RepoFeatures
from schemas.wisdom import Recommendation, recommend
from state import keys, store


def save_features(client: redis.Redis, repo: str, features: RepoFeatures) -> None:
    """Remember ``repo``'s features (replacing what was known)."""
    client.hset(keys.REPO_FEATURES, repo, features.model_dump_json())


def features(client: redis.Redis) -> dict[str, RepoFeatures]:
    """Every repository's remembered features, by name."""
    raw = cast(dict[str, str], client.hgetall(keys.REPO_FEATURES))
    return {name: RepoFeatures.model_validate_json(raw[name]) for name in sorted(raw)}


def recommendation(client: redis.Redis, repo_features: RepoFeatures) -> Recommendation | None:
    """The latest wisdom's preset for ``repo_features``; None when no measured preset exists
    (nothing distilled yet, or no evaluation behind any preset)."""
    wisdom = store.latest_wisdom(client)
    if wisdom is None:
        return None
    return recommend(list(wisdom.presets), repo_features, wisdom.version)
