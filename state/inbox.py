"""The reducer's inbox: reasoned episodes wait here for the merge task, which drains them.

An episode task leaves its episode in a Redis hash (``scripts.INBOX_PUT``, one round trip)
instead of publishing one merge message per episode. The episode that finds no drain
pending sends one (``ripmap.merge_pending``, on the merge queue); the drain
(``worker.drain``) merges episodes one script each (``reducer.merge``, which removes the
episode from the inbox in the same script) until the inbox is empty. Under load one drain
merges many episodes: a Celery message, its events and its ack are paid per drain, not
per episode.

Races: a drain ends by clearing its flag in one step with finding the inbox empty
(``scripts.INBOX_DONE``), so an episode put after that check sends a new drain. A drain
that dies, or an episode task killed between its put and sending the drain, leaves the
flag to expire after ``FLAG_TTL`` seconds; then the next put, or the beat's sweep (for a
non-empty inbox with no flag), sends a drain.
Two drains at once merge nothing twice: the merge is idempotent per episode id.
"""

from __future__ import annotations

from typing import cast

import redis

from schemas.episode import ReasoningEpisode
from state import keys, scripts

# Seconds the drain flag lives unless its drain renews it (every chunk). Short, because a
# worker killed between its put and sending the drain leaves the flag with no drain behind
# it: merging stalls that long (or until the sweep). A drain queued behind slow tasks may
# outlive its flag: then a later put sends a second drain, which costs one task.
FLAG_TTL = 10


def put(client: redis.Redis, episode: ReasoningEpisode) -> bool:
    """Leave ``episode`` for the reducer; True when the caller must send a drain task."""
    return scripts.inbox_put(client, episode.episode_id, episode.model_dump_json(), FLAG_TTL)


def release(client: redis.Redis) -> None:
    """Give up the drain flag (its drain task could not be sent): the sweep sends one."""
    client.delete(keys.INBOX_DRAINING)


def kick(client: redis.Redis) -> bool:
    """Take the drain flag if episodes wait and no drain is pending; True: send a drain."""
    return bool(client.hlen(keys.INBOX)) and bool(
        client.set(keys.INBOX_DRAINING, "1", nx=True, ex=FLAG_TTL))


def count(client: redis.Redis) -> int:
    """How many reasoned episodes wait for the reducer."""
    return int(client.hlen(keys.INBOX))


def waiting(client: redis.Redis, episode_ids: list[str]) -> set[str]:
    """Which of ``episode_ids`` wait in the inbox."""
    if not episode_ids:
        return set()
    raw = cast(list[str | None], client.hmget(keys.INBOX, episode_ids))
    return {e for e, r in zip(episode_ids, raw, strict=True) if r is not None}
