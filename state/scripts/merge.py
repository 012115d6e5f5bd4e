"""Merging: the reducer's one script, which folds a reasoned episode into the scratchpad
exactly once and closes its batch's ledger, inbox and dead-letter entries."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from state import keys
from state.scripts._lua import _INSIGHT_KEYS, LEDGER_KEYS, _run

MERGE_EPISODE = """
-- Merge one episode into the scratchpad, exactly once.
-- KEYS[1] merged marker   KEYS[2] stats   KEYS[3] changes   KEYS[4] confidence
-- KEYS[5] episode log     KEYS[6] params
-- KEYS[7..12] insight zset, insight text hash, for each kind in keys.INSIGHT_KINDS
-- KEYS[13] current version  KEYS[14] pending votes  KEYS[15] pending-since
-- KEYS[16] dead letters  KEYS[17] dead-letter order
-- KEYS[18] open batches  KEYS[19] open since  KEYS[20] open missing  KEYS[21] inbox
-- ARGV[1] dedupe ttl (s)  ARGV[2] episode JSON  ARGV[3] log retention
-- ARGV[4] insight retention per kind
-- ARGV[5] delta JSON {stats: {field: int}, stats_float: {field: float},
--         stats_set: {field: string},
--         changes: [[param:direction, confidence]],
--         insights: [[[hash, text], ...] per kind]}
-- ARGV[6] version the episode reasoned against  ARGV[7] vote JSON ('' for none)
-- ARGV[8] now (s)  ARGV[9] batch id
-- Returns {merged 1|0, pending votes for the current version, current version}.
local current = redis.call('GET', KEYS[13]) or '0'
-- merged wins over dead: a redelivered copy of this batch may have been dead-lettered
-- meanwhile; cleared on duplicates too, since a kill right after a merge skips it once
redis.call('HDEL', KEYS[16], ARGV[9])
redis.call('ZREM', KEYS[17], ARGV[9])
-- the batch is done: the ledger's sweep no longer watches for its loss
redis.call('HDEL', KEYS[18], ARGV[9])
redis.call('ZREM', KEYS[19], ARGV[9])
redis.call('ZREM', KEYS[20], ARGV[9])
redis.call('HDEL', KEYS[21], ARGV[9])
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return {0, redis.call('HLEN', KEYS[14]), current}
end
local d = cjson.decode(ARGV[5])
for field, n in pairs(d.stats) do redis.call('HINCRBY', KEYS[2], field, n) end
for field, x in pairs(d.stats_float) do redis.call('HINCRBYFLOAT', KEYS[2], field, x) end
for field, v in pairs(d.stats_set) do redis.call('HSET', KEYS[2], field, v) end
for _, c in ipairs(d.changes) do
  redis.call('HINCRBY', KEYS[3], c[1], 1)
  redis.call('HINCRBYFLOAT', KEYS[4], c[1], c[2])
end
-- a vote counts toward the next step only if it was cast on the current version; votes on
-- an older one stay as evidence in the aggregates and never re-apply a step taken
if ARGV[7] ~= '' and ARGV[6] == current then
  redis.call('HSET', KEYS[14], KEYS[1], ARGV[7])
  redis.call('SET', KEYS[15], ARGV[8], 'NX')
end
local retention = tonumber(ARGV[4])
for k = 1, 3 do
  local zkey, tkey = KEYS[5 + 2 * k], KEYS[6 + 2 * k]
  for _, item in ipairs(d.insights[k]) do
    redis.call('ZINCRBY', zkey, 1, item[1])
    redis.call('HSETNX', tkey, item[1], item[2])
  end
  -- trim the rarest in one go once 10% over retention, so trimming is amortised
  local card = redis.call('ZCARD', zkey)
  if card > retention + math.floor(retention / 10) then
    local drop = redis.call('ZRANGE', zkey, 0, card - retention - 1)
    redis.call('ZREMRANGEBYRANK', zkey, 0, card - retention - 1)
    redis.call('HDEL', tkey, unpack(drop))
  end
end
redis.call('LPUSH', KEYS[5], ARGV[2])
redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[3]) - 1)
return {1, redis.call('HLEN', KEYS[14]), current}
"""


@dataclass(frozen=True)
class MergeResult:
    """What MERGE_EPISODE did: merged now?, votes pending on the current version, which."""

    merged: bool
    pending: int
    current_version: int


def merge_episode(
    client: redis.Redis,
    episode_id: str,
    episode_json: str,
    delta: dict[str, Any],
    vote: tuple[int, str],
    batch_id: str,
    *,
    dedupe_ttl: int,
    log_retention: int,
    insight_retention: int,
) -> MergeResult:
    """Run MERGE_EPISODE; ``vote`` is (version reasoned against, vote JSON or ''); a dead
    letter under ``batch_id`` is cleared."""
    script_keys = [
        keys.merged(episode_id), keys.STATS, keys.CHANGES, keys.CONFIDENCE,
        keys.EPISODE_LOG, keys.PARAMS, *_INSIGHT_KEYS,
        keys.PARAMS_CURRENT, keys.PENDING, keys.PENDING_SINCE,
        keys.DEAD_LETTERS, keys.DEAD_LETTER_ORDER, *LEDGER_KEYS, keys.INBOX,
    ]
    args = [dedupe_ttl, episode_json, log_retention, insight_retention, json.dumps(delta),
            vote[0], vote[1], time.time(), batch_id]
    merged, pending, current = _run(client, MERGE_EPISODE, script_keys, args)
    return MergeResult(bool(merged), int(pending), int(current))
