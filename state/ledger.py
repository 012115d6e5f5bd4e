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

The sweep works per broker kind (``broker_kind``). On a Redis broker it reads the queues
as above. An AMQP broker (RabbitMQ) does not lose a message it accepted: queues are
durable, messages persistent, the publish confirmed, and a task is acked only after it
ran (a dead consumer's unacknowledged messages are requeued at once). Its queues cannot
be read without taking messages either. So there the sweep trusts every batch whose send
was confirmed to the broker, and sends again only those claimed and never confirmed sent
(the producer died or failed between its claim and the end of its publish): the producer
claims a batch for ``CLAIM_TTL_MAX`` seconds at most, and extends the claim to the dedupe
period once the publish returned, so a claim still short-lived (or lapsed) on two sweeps
is a send never confirmed. Any other broker kind is swept the same way.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import redis
from pydantic import ValidationError

from schemas.errors import describe
from schemas.failures import FailureBatch
from schemas.settings import Settings
from schemas.tasks import EPISODE_QUEUE
from state import inbox, keys, scripts, store

CONFIRM_SECONDS = 5.0  # between the two sightings of a batch in no queue
SWEEP_LIMIT = 1_000  # open batches one sweep looks at
RESENT_STAT = "batches_resent"  # field of keys.STATS the sweep counts its re-sends in
UNACKED = "unacked"  # kombu's hash of delivered, unacknowledged messages (its default name)
# The longest a producer's claim lives before its send is confirmed (producer.api claims for
# 60 s); a confirmed claim lives ``dedupe_ttl_seconds`` (at least an hour). A claim whose
# time to live is at most this, or that lapsed, belongs to a send never confirmed.
CLAIM_TTL_MAX = 600

BrokerKind = Literal["redis", "amqp", "other"]
REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})  # what the redis client can read
AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp", "librabbitmq"})


def broker_kind(url: str) -> BrokerKind:
    """``redis`` when the sweep can read the broker's queues as Redis lists (a Sentinel-
    managed Redis included: ``store.connect`` reaches its master), ``amqp`` for RabbitMQ
    (kombu's AMQP transports), ``other`` for any other kombu transport."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in REDIS_SCHEMES or scheme == store.SENTINEL_SCHEME:
        return "redis"
    return "amqp" if scheme in AMQP_SCHEMES else "other"


def publish_options(url: str) -> dict[str, Any]:
    """Transport options every publisher to the broker at ``url`` needs for the sweep's
    trust to hold: on AMQP, publisher confirms (py-amqp's ``confirm_publish``: a publish
    returns once the broker accepted the message, and raises if it refused it). Nothing
    on the others (Redis: a command that returned was executed)."""
    return {"confirm_publish": True} if broker_kind(url) == "amqp" else {}


@dataclass(frozen=True)
class ConfirmingBroker:
    """A broker whose queues the sweep does not read (AMQP, or another non-Redis kind):
    what it confirmed is trusted to it (``kind`` says which it is)."""

    kind: BrokerKind


Broker = redis.Redis | ConfirmingBroker  # what ``find_lost`` sweeps against


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
    broker: BrokerKind = "redis"  # which sweep ran: "missing" means unconfirmed unless redis

    def as_dict(self) -> dict[str, Any]:
        """The report as the sweep task's JSON result."""
        return {"checked": self.checked, "missing": self.missing, "resent": self.resent,
                "skipped": self.skipped, "invalid": [b.batch_id for b in self.invalid],
                "broker": self.broker}


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


def connect_broker(url: str) -> Broker:
    """What ``find_lost`` sweeps against for the broker at ``url``: a client of its Redis
    (to read its queues, not to consume), or a ``ConfirmingBroker`` for any other kind."""
    kind = broker_kind(url)
    return store.connect(url, max_connections=4) if kind == "redis" else ConfirmingBroker(kind)


def find_lost(state: redis.Redis, broker: Broker, settings: Settings,
              now: float | None = None) -> tuple[SweepReport, list[FailureBatch]]:
    """Open batches the broker lost, for the caller to send again: on a Redis broker, those
    seen in no queue twice; on any other, those whose send was never confirmed, seen so
    twice.

    A ledger copy that no longer validates is handed back in ``report.invalid`` for the
    caller to dead-letter (the ledger does not write dead letters itself)."""
    now = time.time() if now is None else now
    report = SweepReport()
    old = cast(list[str], state.zrangebyscore(
        keys.OPEN_SINCE, "-inf", now - settings.ledger_check_after_seconds, 0, SWEEP_LIMIT))
    report.checked = len(old)
    if isinstance(broker, ConfirmingBroker):
        report.broker = broker.kind
        return report, _unconfirmed(state, old, now, report)
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


def _unconfirmed(state: redis.Redis, old: list[str], now: float, report: SweepReport
                 ) -> list[FailureBatch]:
    """Of the ``old`` open batches, those whose send was never confirmed on two sweeps at
    least ``CONFIRM_SECONDS`` apart (a send confirmed meanwhile clears the first sighting).
    """
    if not old:
        return []
    pipe = state.pipeline(transaction=False)
    for batch_id in old:
        pipe.ttl(keys.batch_seen(batch_id))
    ttls = [int(t) for t in pipe.execute()]
    # -2: the claim lapsed unconfirmed; -1 (no expiry) is not a producer's claim
    unsent = [b for b, t in zip(old, ttls, strict=True) if t == -2 or 0 <= t <= CLAIM_TTL_MAX]
    sent = [b for b in old if b not in set(unsent)]
    report.missing = len(unsent)
    confirmed = scripts.sight_missing(state, unsent, sent, now, CONFIRM_SECONDS)
    return _payloads(state, confirmed, report)


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
