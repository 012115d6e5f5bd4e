"""Distillation: the scratchpad's aggregates into a versioned ``Wisdom`` record."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, replace

import redis
from redis.exceptions import LockError

from schemas.settings import Settings
from schemas.wisdom import MAX_PRESETS, Preset, Wisdom, WisdomDraft
from state import keys, store
from worker import presets
from worker.reasoners.base import Reasoner

WISDOM_HISTORY = 50
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillOutcome:
    """What a distillation run did: ``distilled``, ``nothing-new``, ``locked``, ``unparsable``."""

    status: str
    version: int = 0
    episodes: int = 0
    tick: int | None = None  # the interval-aligned window a beat tick ran in


def on_tick(
    client: redis.Redis, settings: Settings, reasoner: Reasoner, now: float | None = None
) -> DistillOutcome:
    """A beat tick's distillation: at most one per interval-aligned window.

    Two beats (an operator's mistake) each send every tick; the lock alone lets the second
    copy distill again once the first finished if anything merged in between. The first
    copy of a window's tick claims it with SET NX, so the other finds it taken
    (``tick-taken``); the claim expires after two windows.
    """
    interval = settings.distill_interval_seconds
    tick = int((time.time() if now is None else now) // interval)
    ttl = max(2, math.ceil(2 * interval))
    if not client.set(keys.distill_tick(tick), "1", nx=True, ex=ttl):
        return DistillOutcome("tick-taken", tick=tick)
    return replace(distill(client, settings, reasoner), tick=tick)


def distill(
    client: redis.Redis, settings: Settings, reasoner: Reasoner, *, force: bool = False
) -> DistillOutcome:
    """Distill once, unless nothing was merged since the last one or another run holds the lock."""
    # A lock with expiry: a second beat or a manual trigger can't double a run, and a
    # crashed holder can't block distillation forever. redis-py's Lock releases only its
    # own token (a run that outlived its lock must not free the next holder's).
    lock = client.lock(keys.DISTILL_LOCK, timeout=settings.visibility_timeout, blocking=False)
    if not lock.acquire():
        return DistillOutcome("locked")
    try:
        return _distill_locked(client, settings, reasoner, force)
    finally:
        with contextlib.suppress(LockError):  # expired meanwhile: nothing of ours to free
            lock.release()


def _distill_locked(
    client: redis.Redis, settings: Settings, reasoner: Reasoner, force: bool
) -> DistillOutcome:
    summary = store.summary(client, settings.distill_top_k)
    if summary.pending_distill == 0 and not (force and summary.episodes):
        return DistillOutcome("nothing-new", summary.wisdom_version, summary.episodes)
    reply = reasoner.distill(summary)
    if reply.draft is None:
        return DistillOutcome("unparsable", summary.wisdom_version, summary.episodes)
    draft = with_measured_presets(reply.draft, measured_presets(client, settings))
    wisdom = Wisdom(
        **draft.model_dump(),
        version=summary.wisdom_version + 1,
        created_at=time.time(),
        episodes_seen=summary.episodes,
        reasoner=reasoner.name,
        usage=reply.usage,
    )
    store.save_wisdom(client, wisdom, consumed=summary.pending_distill, keep=WISDOM_HISTORY)
    return DistillOutcome("distilled", wisdom.version, summary.episodes)


def measured_presets(client: redis.Redis, settings: Settings) -> list[Preset]:
    """Presets built from the evaluations (``worker.presets``); none when that fails, so a
    repository that cannot be read never stops a distillation."""
    try:
        return presets.build(client, settings)
    except Exception:  # logged; the reasoner's draft still stands
        log.exception("building presets from evaluations failed")
        return []


def with_measured_presets(draft: WisdomDraft, measured: list[Preset]) -> WisdomDraft:
    """The reasoner's draft with the measured presets first. Whatever condition, evidence or
    selection a reasoner wrote is dropped (only measurements carry them); a reasoner preset
    whose name a measured one takes is dropped; the reasoner's presets fill what room is
    left."""
    taken = {p.name for p in measured}
    prose = [p.model_copy(update={"condition": None, "evidence": [], "selection": None})
             for p in draft.presets if p.name not in taken]
    merged = (measured + prose)[:MAX_PRESETS]
    return draft.model_copy(update={"presets": merged})
