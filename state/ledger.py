"""The open-batch ledger: every batch the producer sent, until it is merged or dead-lettered.

Celery's Redis transport can lose a message when a worker dies at the instant it takes
one: BRPOP has removed it from the queue, and kombu has not yet recorded it among the
unacknowledged messages that it restores. So the producer records each batch before
sending it (``scripts.CLAIM_BATCHES``), the merge (``scripts.MERGE_EPISODE``), the episode
reads of an already-merged batch and the dead-letter store clear it, and a beat task
sweeps: a batch open longer than ``ledger_check_after_seconds`` that is in no queue, among
no unacknowledged messages and not in the reducer's inbox, on two sweeps at least
``CONFIRM_SECONDS`` apart, is sent again. Two sightings, because a message is briefly in
neither place while a worker takes it.
A batch sent again by mistake costs one more episode and changes nothing: its episode is
merged once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from pydantic import ValidationError

from schemas.errors import describe
from schemas.failures import FailureBatch
from schemas.settings import Settings
from schemas.tasks import EPISODE_QUEUE
from state import inbox, keys, scripts

CONFIRM_SECONDS = 5.0  # between the two sightings of a batch in no queue
SWEEP_LIMIT = 1_000  # open batches one sweep looks at
RESENT_STAT = "batches_resent"  # field of keys.STATS the sweep counts its re-sends in
UNACKED = "unacked"  # kombu's hash of delivered, unacknowledged messages (its default name)


@dataclass(frozen=True)
class InvalidBatch:
    """A ledger copy that no longer validates: the caller dead-letters it."""

    batch_id: str
    payload: Any
    reason: str


@dataclass
class SweepReport:
    """What one sweep found: open batches old enough to check, missing ones, and re-sent."""

    checked: int = 0
    missing: int = 0
    resent: list[str] = field(default_factory=list)
    skipped: str | None = None
    invalid: list[InvalidBatch] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as the sweep task's JSON result."""
        return {"checked": self.checked, "missing": self.missing, "resent": self.resent,
                "skipped": self.skipped, "invalid": [b.batch_id for b in self.invalid]}


def queue_clear(pipe: redis.client.Pipeline, batch_ids: list[str]) -> None:
    """Queue the removal of ``batch_ids`` from the ledger on ``pipe``."""
    if batch_ids:
        pipe.hdel(keys.OPEN, *batch_ids)
        pipe.zrem(keys.OPEN_SINCE, *batch_ids)
        pipe.zrem(keys.OPEN_MISSING, *batch_ids)


def forget(client: redis.Redis, batch_ids: list[str]) -> None:
    """Release the claims of batches whose send failed (the caller is told, and may submit
    them again) and take them off the ledger, in one transaction."""
    if batch_ids:
        pipe = client.pipeline(transaction=True)
        pipe.delete(*[keys.batch_seen(b) for b in batch_ids])
        queue_clear(pipe, batch_ids)
        pipe.execute()


def open_count(client: redis.Redis) -> int:
    """How many batches are sent and not yet merged or dead-lettered."""
    return int(client.hlen(keys.OPEN))


def count_resent(client: redis.Redis, n: int) -> None:
    """Add ``n`` batches the sweep sent again to the scratchpad's stats."""
    client.hincrby(keys.STATS, RESENT_STAT, n)


def resent_count(client: redis.Redis) -> int:
    """How many batches the sweep has sent again since the scratchpad began."""
    return int(client.hget(keys.STATS, RESENT_STAT) or 0)


def find_lost(state: redis.Redis, broker: redis.Redis, settings: Settings,
              now: float | None = None) -> tuple[SweepReport, list[FailureBatch]]:
    """Open batches the broker lost (seen missing twice), for the caller to send again.

    A ledger copy that no longer validates is handed back in ``report.invalid`` for the
    caller to dead-letter (the ledger does not write dead letters itself)."""
    now = time.time() if now is None else now
    report = SweepReport()
    old = cast(list[str], state.zrangebyscore(
        keys.OPEN_SINCE, "-inf", now - settings.ledger_check_after_seconds, 0, SWEEP_LIMIT))
    report.checked = len(old)
    if not old:
        return report, []
    present = broker_ids(broker, settings.ledger_scan_limit)
    if present is None:
        report.skipped = f"more than {settings.ledger_scan_limit} messages queued"
        return report, []
    present |= inbox.waiting(state, [b for b in old if b not in present])  # read last
    missing = [b for b in old if b not in present]
    report.missing = len(missing)
    confirmed = scripts.sight_missing(state, missing, [b for b in old if b in present], now,
                                      CONFIRM_SECONDS)
    return report, _payloads(state, confirmed, report)


def broker_ids(broker: redis.Redis, limit: int) -> set[str] | None:
    """Batch ids of every episode message queued or delivered (None when more than
    ``limit`` are queued). The merge queue carries no batch's message (reasoned episodes
    wait in the inbox). The queue first, then the unacknowledged: a message moves from
    one to the other, so reading in that order sees it once or twice."""
    if int(broker.llen(EPISODE_QUEUE)) > limit:
        return None
    raw = cast(list[str], broker.lrange(EPISODE_QUEUE, 0, limit))
    delivered = [json.loads(v)[0] for v in cast(list[str], broker.hvals(UNACKED))]
    ids = {_message_id(json.loads(m)) for m in raw} | {_message_id(m) for m in delivered}
    return {i for i in ids if i}


def _message_id(message: Any) -> str:
    try:
        return str(message["headers"]["id"])
    except (KeyError, TypeError):  # not a Celery protocol-2 message
        return ""


def _payloads(state: redis.Redis, batch_ids: list[str], report: SweepReport
              ) -> list[FailureBatch]:
    """The ledger's copies of ``batch_ids`` (a batch closed meanwhile is left out; one that
    no longer validates goes to ``report.invalid``)."""
    if not batch_ids:
        return []
    out = []
    for batch_id, raw in zip(batch_ids, cast(list[str | None], state.hmget(keys.OPEN, batch_ids)),
                             strict=True):
        if raw is None:
            continue
        try:
            out.append(FailureBatch.model_validate_json(raw))
        except ValidationError as exc:  # only if the contract changed under the ledger
            reason = "open batch no longer valid: " + "; ".join(describe(exc))
            report.invalid.append(InvalidBatch(batch_id, json.loads(raw), reason))
    return out
