"""Distillation: the scratchpad's aggregates into a versioned ``Wisdom`` record."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import redis

from schemas.settings import Settings
from schemas.wisdom import Wisdom
from worker import keys, scripts, store
from worker.reasoners.base import Reasoner

WISDOM_HISTORY = 50


@dataclass(frozen=True)
class DistillOutcome:
    """What a distillation run did: ``distilled``, ``nothing-new``, ``locked``, ``unparsable``."""

    status: str
    version: int = 0
    episodes: int = 0


def distill(
    client: redis.Redis, settings: Settings, reasoner: Reasoner, *, force: bool = False
) -> DistillOutcome:
    """Distill once, unless nothing was merged since the last one or another run holds the lock."""
    token = uuid.uuid4().hex
    # A lock with expiry: a second beat or a manual trigger can't double a run, and a
    # crashed holder can't block distillation forever.
    if not client.set(keys.DISTILL_LOCK, token, nx=True, ex=settings.visibility_timeout):
        return DistillOutcome("locked")
    try:
        return _distill_locked(client, settings, reasoner, force)
    finally:
        scripts.release_lock(client, keys.DISTILL_LOCK, token)


def _distill_locked(
    client: redis.Redis, settings: Settings, reasoner: Reasoner, force: bool
) -> DistillOutcome:
    summary = store.summary(client, settings.distill_top_k)
    if summary.pending_distill == 0 and not (force and summary.episodes):
        return DistillOutcome("nothing-new", summary.wisdom_version, summary.episodes)
    reply = reasoner.distill(summary)
    if reply.draft is None:
        return DistillOutcome("unparsable", summary.wisdom_version, summary.episodes)
    wisdom = Wisdom(
        **reply.draft.model_dump(),
        version=summary.wisdom_version + 1,
        created_at=time.time(),
        episodes_seen=summary.episodes,
        reasoner=reasoner.name,
        usage=reply.usage,
    )
    store.save_wisdom(client, wisdom, consumed=summary.pending_distill, keep=WISDOM_HISTORY)
    return DistillOutcome("distilled", wisdom.version, summary.episodes)
