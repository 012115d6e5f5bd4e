"""The dead-letter store: nothing the service gives up on is lost silently."""

from __future__ import annotations

import time
from typing import Any, cast

import redis

from schemas.deadletter import DeadLetter
from schemas.failures import content_id
from state import keys, ledger

MAX_REASON_CHARS = 2_000


def add(
    client: redis.Redis,
    task: str,
    payload: Any,
    reason: str,
    *,
    letter_id: str | None = None,
    attempts: int = 1,
) -> str:
    """Record a dead letter under ``letter_id`` (the batch id when known), once per id."""
    letter = DeadLetter(
        id=letter_id or content_id([task, payload]),
        task=task,
        reason=reason[:MAX_REASON_CHARS],
        payload=payload,
        attempts=attempts,
        created_at=time.time(),
    )
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.DEAD_LETTERS, letter.id, letter.model_dump_json())
    pipe.zadd(keys.DEAD_LETTER_ORDER, {letter.id: letter.created_at})
    # a batch's letter is filed under its batch id: the sweep stops watching for its loss
    ledger.queue_clear(pipe, [letter.id])
    pipe.execute()
    return letter.id


def list_all(client: redis.Redis, limit: int = 100) -> list[DeadLetter]:
    """The newest ``limit`` dead letters."""
    ids = cast(list[str], client.zrevrange(keys.DEAD_LETTER_ORDER, 0, limit - 1))
    raw = client.hmget(keys.DEAD_LETTERS, ids) if ids else []
    return [DeadLetter.model_validate_json(r) for r in raw if r]


def get(client: redis.Redis, letter_id: str) -> DeadLetter | None:
    """One dead letter by id."""
    raw = client.hget(keys.DEAD_LETTERS, letter_id)
    return DeadLetter.model_validate_json(raw) if raw else None


def remove(client: redis.Redis, letter_id: str) -> bool:
    """Delete one dead letter; False when there was none."""
    pipe = client.pipeline(transaction=True)
    pipe.hdel(keys.DEAD_LETTERS, letter_id)
    pipe.zrem(keys.DEAD_LETTER_ORDER, letter_id)
    return bool(pipe.execute()[0])


def exists_flags(client: redis.Redis, letter_ids: list[str]) -> list[bool]:
    """For each id, whether a dead letter exists, in one round trip."""
    if not letter_ids:
        return []
    return [x is not None for x in client.hmget(keys.DEAD_LETTERS, letter_ids)]


def count(client: redis.Redis) -> int:
    """How many dead letters there are."""
    return int(client.hlen(keys.DEAD_LETTERS))


def purge(client: redis.Redis) -> int:
    """Delete every dead letter; returns how many there were."""
    pipe = client.pipeline(transaction=True)
    pipe.hlen(keys.DEAD_LETTERS)
    pipe.delete(keys.DEAD_LETTERS, keys.DEAD_LETTER_ORDER)
    return int(pipe.execute()[0])
