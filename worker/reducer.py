"""The reducer: merge one episode into the shared scratchpad, atomically and once."""

from __future__ import annotations

import time
from typing import Any

import redis

from schemas.episode import ReasoningEpisode
from schemas.settings import Settings
from schemas.versions import Vote, VotedChange
from state import insights, scripts, versions

# Below this confidence an episode's proposals are counted as evidence but cast no vote
# (upstream ripmap's threshold for applying changes).
MIN_VOTE_CONFIDENCE = 0.3


def delta(episode: ReasoningEpisode) -> dict[str, Any]:
    """Everything the merge script adds to the aggregates for this episode."""
    answer = episode.answer
    ok = episode.status == "ok"
    changes = answer.proposed_changes if ok else []
    stats = {
        "episodes": 1,
        "unparsable": 0 if ok else 1,
        "proposals": len(changes),
        "dropped_proposals": episode.dropped_proposals,
        "pending_distill": 1,
        "failures": episode.failure_count,
        **_usage_stats(episode),
    }
    return {
        # zero increments are left out: each is a Redis call inside the merge script
        "stats": {field: n for field, n in stats.items() if n},
        "stats_float": {"confidence_sum": answer.confidence} if ok else {},
        "stats_set": {"last_merged_at": repr(time.time())},
        "changes": [[f"{c.param}:{c.direction.value}", answer.confidence] for c in changes],
        "insights": [
            insights.items(answer.param_interactions if ok else []),
            insights.items(answer.structural_insights if ok else []),
            insights.items(episode.failure_signatures),
        ],
    }


def vote(episode: ReasoningEpisode) -> str:
    """The episode's vote for the next parameter step as JSON, or '' when it casts none."""
    answer = episode.answer
    if episode.status != "ok" or not answer.proposed_changes:
        return ""
    if answer.confidence < MIN_VOTE_CONFIDENCE:
        return ""
    changes = [VotedChange(param=c.param, direction=c.direction, magnitude=c.magnitude,
                           rationale=c.rationale[:300]) for c in answer.proposed_changes]
    return Vote(episode_id=episode.episode_id, confidence=answer.confidence,
                changes=changes).model_dump_json()


def merge(client: redis.Redis, episode: ReasoningEpisode, settings: Settings) -> bool:
    """Merge ``episode`` in one round trip; False when it was merged before.

    When the merge completes a quorum of votes on the current version, the consensus
    step follows (it is idempotent: a redelivered merge finds the step already taken).
    """
    result = scripts.merge_episode(
        client,
        episode.episode_id,
        episode.model_dump_json(),
        delta(episode),
        (episode.params_version, vote(episode)),
        episode.batch_id,
        dedupe_ttl=settings.dedupe_ttl_seconds,
        log_retention=settings.episode_log_retention,
        insight_retention=settings.insight_retention,
    )
    if result.pending >= settings.consensus_quorum:
        versions.try_step(client, settings, min_votes=settings.consensus_quorum)
    return result.merged


def _usage_stats(episode: ReasoningEpisode) -> dict[str, int]:
    u = episode.usage
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_creation_input_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens,
    }
