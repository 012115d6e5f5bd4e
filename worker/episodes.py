"""One reasoning episode: a batch of failures in, a validated episode record out."""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from pydantic import ValidationError

from schemas.episode import ReasonerAnswer, ReasoningEpisode
from schemas.failures import FailureBatch
from schemas.limits import MAX_REASONING_CHARS
from schemas.settings import Settings
from schemas.versions import Vote
from state import scripts, store, versions
from worker import signatures
from worker.reasoners.base import EpisodeRequest, Reasoner, VersionEvidence


def build_request(context: scripts.EpisodeContext, batch: FailureBatch) -> EpisodeRequest:
    """Current parameters and version, votes already pending on it, prior knowledge, the
    recent trajectory, and the batch's failure signatures."""
    return EpisodeRequest(
        failures=list(batch.failures),
        params=store.params_from(context.params),
        signatures=signatures.batch_signatures(list(batch.failures)),
        knowledge=context.knowledge,
        params_version=context.version,
        trajectory=versions.trajectory(context.trajectory),
        pending=_pending_counts(context.votes),
        history=history(context.trajectory),
    )


def history(rows: list[tuple[int, str, int, float]]) -> list[VersionEvidence]:
    """EPISODE_CONTEXT's trajectory rows (newest first) as structured evidence, oldest
    first: each version's parent, reason and factors (from its brief) and mean NDCG."""
    out = []
    for version, raw_brief, cases, total in reversed(rows):
        brief: dict[str, Any] = json.loads(raw_brief) if raw_brief else {}
        if not brief and version != 0:
            brief = {"reason": "unknown"}  # its record expired: no step to read
        out.append(VersionEvidence(
            version=version, parent=brief.get("parent"),
            reason=str(brief.get("reason", "initial")),
            factors={str(p): float(f) for p, f in (brief.get("factors") or {}).items()},
            ndcg=total / cases if cases else None, cases=cases))
    return out


def read_context(client: redis.Redis, batch: FailureBatch, settings: Settings
                 ) -> scripts.EpisodeContext:
    """Everything the episode reads from the shared state, in one round trip."""
    return scripts.episode_context(client, batch.batch_id, settings.prompt_top_k,
                                   settings.trajectory_length)


def _pending_counts(raw_votes: list[str]) -> dict[str, int]:
    """``param direction`` -> how many pending votes propose it (for diversity)."""
    counts: dict[str, int] = {}
    for raw in raw_votes:
        for change in Vote.model_validate_json(raw).changes:
            key = f"{change.param} {change.direction.value}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def run_episode(
    request: EpisodeRequest, batch: FailureBatch, reasoner: Reasoner
) -> ReasoningEpisode:
    """Reason about ``batch``; an unparsable answer yields a record that changes nothing."""
    started = time.time()
    reply = reasoner.reason(request)
    return ReasoningEpisode(
        episode_id=batch.batch_id,
        batch_id=batch.batch_id,
        repo=batch.repo,
        status="ok" if reply.answer is not None else "unparsable",
        params=request.params,
        params_version=request.params_version,
        reasoning=reply.raw[:MAX_REASONING_CHARS],
        answer=reply.answer or ReasonerAnswer(confidence=0.0),
        failure_signatures=list(request.signatures),
        dropped_proposals=reply.dropped,
        reasoner=reasoner.name,
        usage=reply.usage,
        started_at=started,
        finished_at=time.time(),
        failure_count=len(batch.failures),
        mean_ndcg=sum(f.ndcg for f in batch.failures) / len(batch.failures),
    )


def parse_batch(payload: Any, settings: Settings) -> FailureBatch:
    """Validate a task payload against the contract and the configured batch size."""
    batch = FailureBatch.model_validate(payload)
    if len(batch.failures) > settings.batch_size:
        raise ValidationError.from_exception_data(
            "FailureBatch",
            [{"type": "too_long", "loc": ("failures",),
              "input": payload, "ctx": {"field_type": "List", "max_length": settings.batch_size,
                                        "actual_length": len(batch.failures)}}],
        )
    return batch


def process(
    client: redis.Redis, batch: FailureBatch, settings: Settings, reasoner: Reasoner
) -> ReasoningEpisode | None:
    """Run the batch's episode unless it was merged already (a redelivery costs nothing)."""
    context = read_context(client, batch, settings)
    if context.merged:
        return None
    return run_episode(build_request(context, batch), batch, reasoner)
