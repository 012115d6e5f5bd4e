"""Streaming push: taking full batches out of a repository's push buffer into the pending
hash, and claiming pending batches whose taker never confirmed them sent."""

from __future__ import annotations

from typing import Any

import redis

from state import keys
from state.scripts._lua import _pairs_text, _run

PUSH_TAKE = """
-- Append failures to one repository's push buffer, then move every full batch out of it
-- into the pending hash (and, when flushing, the partial rest once the repo is due).
-- A failure is in exactly one place at any time: the buffer or one pending batch.
-- KEYS[1] buffer (list)   KEYS[2] push repos zset   KEYS[3] pending hash
-- KEYS[4] pending order zset   KEYS[5] pending token counter
-- ARGV[1] repo   ARGV[2] batch size   ARGV[3] now
-- ARGV[4] flush cutoff: also take a partial batch when the repo's oldest arrival is at or
--         before it ('' when pushing: only full batches are taken)
-- ARGV[5..] failure JSON to append (none when flushing)
-- Returns {buffer length before the append, token, batch JSON, token, batch JSON, ...}
local size = tonumber(ARGV[2])
local before = redis.call('LLEN', KEYS[1])
local oldest = redis.call('ZSCORE', KEYS[2], ARGV[1])
for i = 5, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
local len = before + #ARGV - 4
local partial = ARGV[4] ~= '' and oldest and tonumber(oldest) <= tonumber(ARGV[4])
local out = {before}
local taken = 0
while len >= size or (partial and len > 0) do
  local n = math.min(size, len)
  local items = redis.call('LRANGE', KEYS[1], 0, n - 1)
  redis.call('LTRIM', KEYS[1], n, -1)
  local token = tostring(redis.call('INCR', KEYS[5]))
  local batch = '{"failures":[' .. table.concat(items, ',') .. ']}'
  redis.call('HSET', KEYS[3], token, batch)
  redis.call('ZADD', KEYS[4], ARGV[3], token)
  out[#out + 1] = token
  out[#out + 1] = batch
  len = len - n
  taken = taken + n
end
if len == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
elseif taken >= before then
  -- every failure still buffered arrived with this call
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
else
  redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[1])
end
return out
"""

CLAIM_STALE_BATCHES = """
-- Claim pending batches taken at or before a cutoff and never confirmed sent (their
-- taker died or stalled), for re-sending. Each claimed batch is re-stamped with now, so
-- concurrent flushers never claim the same one; if the claimer dies too, it goes stale
-- again and is claimed later.
-- KEYS[1] pending hash   KEYS[2] pending order zset
-- ARGV[1] cutoff   ARGV[2] now   ARGV[3] at most how many
-- Returns {token, batch JSON, token, batch JSON, ...}
local tokens = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, token in ipairs(tokens) do
  local batch = redis.call('HGET', KEYS[1], token)
  if batch then
    redis.call('ZADD', KEYS[2], ARGV[2], token)
    out[#out + 1] = token
    out[#out + 1] = batch
  else
    redis.call('ZREM', KEYS[2], token)
  end
end
return out
"""

# (buffer length before the append, [(pending token, FailureBatch JSON), ...])
Taken = tuple[int, list[tuple[str, str]]]

_PUSH_KEYS = [keys.PUSH_REPOS, keys.PUSH_PENDING, keys.PUSH_PENDING_ORDER, keys.PUSH_SEQ]


def queue_push_take(
    pipe: redis.client.Pipeline,
    repo: str,
    items: list[str],
    *,
    batch_size: int,
    now: float,
    flush_cutoff: float | None = None,
) -> None:
    """Queue PUSH_TAKE for one repository; parse its reply with ``parse_taken``."""
    args = [repo, batch_size, repr(now), "" if flush_cutoff is None else repr(flush_cutoff)]
    _run(pipe, PUSH_TAKE, [keys.push_buffer(repo), *_PUSH_KEYS], [*args, *items])


def push_take(
    client: redis.Redis,
    repo: str,
    items: list[str],
    *,
    batch_size: int,
    now: float,
    flush_cutoff: float | None = None,
) -> Taken:
    """Run PUSH_TAKE for one repository: append ``items``, take what is ready."""
    args = [repo, batch_size, repr(now), "" if flush_cutoff is None else repr(flush_cutoff)]
    raw = _run(client, PUSH_TAKE, [keys.push_buffer(repo), *_PUSH_KEYS], [*args, *items])
    return parse_taken(raw)


def parse_taken(raw: list[Any]) -> Taken:
    """PUSH_TAKE's reply as ``(length before, [(token, batch JSON), ...])``."""
    return int(raw[0]), _pairs_text(raw[1:])


def claim_stale_batches(
    client: redis.Redis, cutoff: float, now: float, limit: int
) -> list[tuple[str, str]]:
    """Run CLAIM_STALE_BATCHES: ``[(token, batch JSON), ...]`` now ours to re-send."""
    script_keys = [keys.PUSH_PENDING, keys.PUSH_PENDING_ORDER]
    raw = _run(client, CLAIM_STALE_BATCHES, script_keys, [repr(cutoff), repr(now), limit])
    return _pairs_text(raw)
