"""The reducer: merge one episode into the shared scratchpad, atomically and once."""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

import redis

from schemas.episode import ReasoningEpisode
from schemas.settings import Settings
from worker import scripts, stepping

# Below this confidence an episode's proposals are counted as evidence but not applied
# (upstream ripmap's threshold).
MIN_APPLY_CONFIDENCE = 0.3


def normalise(text: str) -> str:
    """Insight text reduced to what makes two statements the same insight."""
    text = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", text.lower())
    text = re.sub(r"[`*_\"'“”‘’]", "", text)
    return re.sub(r"\s+", " ", text).strip(" .;:!")


def insight_items(texts: list[str]) -> list[tuple[str, str]]:
    """``(hash of normalised text, text)`` for each distinct insight, first wording kept."""
    seen: dict[str, str] = {}
    for text in texts:
        norm = normalise(text)
        if norm:
            seen.setdefault(hashlib.sha1(norm.encode()).hexdigest()[:16], text.strip())
    return list(seen.items())


def delta(episode: ReasoningEpisode) -> dict[str, Any]:
    """Everything the merge script adds for this episode."""
    answer = episode.answer
    ok = episode.status == "ok"
    changes = answer.proposed_changes if ok else []
    apply = ok and answer.confidence >= MIN_APPLY_CONFIDENCE
    return {
        "stats": {
            "episodes": 1,
            "unparsable": 0 if ok else 1,
            "proposals": len(changes),
            "dropped_proposals": episode.dropped_proposals,
            "pending_distill": 1,
            "failures": episode.failure_count,
            **_usage_stats(episode),
        },
        "stats_float": {"confidence_sum": answer.confidence if ok else 0.0},
        "stats_set": {"last_merged_at": repr(time.time())},
        "changes": [[f"{c.param}:{c.direction.value}", answer.confidence] for c in changes],
        "steps": [list(stepping.step(c)) for c in changes] if apply else [],
        "insights": [
            insight_items(answer.param_interactions if ok else []),
            insight_items(answer.structural_insights if ok else []),
            insight_items(episode.failure_signatures),
        ],
    }


def merge(client: redis.Redis, episode: ReasoningEpisode, settings: Settings) -> bool:
    """Merge ``episode`` in one round trip; False when it was merged before."""
    return scripts.merge_episode(
        client,
        episode.episode_id,
        episode.model_dump_json(),
        delta(episode),
        dedupe_ttl=settings.dedupe_ttl_seconds,
        log_retention=settings.episode_log_retention,
        insight_retention=settings.insight_retention,
    )


def _usage_stats(episode: ReasoningEpisode) -> dict[str, int]:
    u = episode.usage
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_creation_input_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens,
    }
