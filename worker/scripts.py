"""Every Lua script the service runs, each wrapped by one typed function.

Scripts run atomically in Redis: that is how concurrent reducers and distillers
stay correct without locks around read-modify-write cycles.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from redis.commands.core import Script

from worker import keys

Client = redis.Redis | redis.client.Pipeline

MERGE_EPISODE = """
-- Merge one episode into the scratchpad, exactly once.
-- KEYS[1] merged marker   KEYS[2] stats   KEYS[3] changes   KEYS[4] confidence
-- KEYS[5] episode log     KEYS[6] params
-- KEYS[7..12] insight zset, insight text hash, for each kind in keys.INSIGHT_KINDS
-- ARGV[1] dedupe ttl (s)  ARGV[2] episode JSON  ARGV[3] log retention
-- ARGV[4] insight retention per kind
-- ARGV[5] delta JSON {stats: {field: int}, stats_float: {field: float},
--         stats_set: {field: string},
--         changes: [[param:direction, confidence]],
--         steps: [[param, factor, floor, ceiling, default]],
--         insights: [[[hash, text], ...] per kind]}
-- Returns 1 when merged, 0 when this episode was merged before.
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local d = cjson.decode(ARGV[5])
for field, n in pairs(d.stats) do redis.call('HINCRBY', KEYS[2], field, n) end
for field, x in pairs(d.stats_float) do redis.call('HINCRBYFLOAT', KEYS[2], field, x) end
for field, v in pairs(d.stats_set) do redis.call('HSET', KEYS[2], field, v) end
for _, c in ipairs(d.changes) do
  redis.call('HINCRBY', KEYS[3], c[1], 1)
  redis.call('HINCRBYFLOAT', KEYS[4], c[1], c[2])
end
for _, s in ipairs(d.steps) do
  local cur = tonumber(redis.call('HGET', KEYS[6], s[1])) or s[5]
  local new = math.min(math.max(cur * s[2], s[3]), s[4])
  redis.call('HSET', KEYS[6], s[1], string.format('%.17g', new))
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
return 1
"""

TOP_INSIGHTS = """
-- The most frequent insights of each kind with their text, in one round trip.
-- KEYS[1..6] insight zset, insight text hash, for each kind in keys.INSIGHT_KINDS
-- ARGV[1] how many per kind
-- Returns, per kind, a flat list {text, count, text, count, ...}
local out = {}
for k = 1, 3 do
  local zkey, tkey = KEYS[2 * k - 1], KEYS[2 * k]
  local top = redis.call('ZREVRANGE', zkey, 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
  local flat = {}
  for i = 1, #top, 2 do
    flat[#flat + 1] = redis.call('HGET', tkey, top[i]) or top[i]
    flat[#flat + 1] = top[i + 1]
  end
  out[k] = flat
end
return out
"""

RELEASE_LOCK = """
-- Release a lock only if we still hold it (it may have expired and been retaken).
-- KEYS[1] lock   ARGV[1] our token
-- Returns 1 when released, 0 when the lock was no longer ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_INSIGHT_KEYS = [
    k for kind in keys.INSIGHT_KINDS for k in (keys.insights(kind), keys.insight_text(kind))
]


def merge_episode(
    client: redis.Redis,
    episode_id: str,
    episode_json: str,
    delta: dict[str, Any],
    *,
    dedupe_ttl: int,
    log_retention: int,
    insight_retention: int,
) -> bool:
    """Run MERGE_EPISODE; True when merged now, False when merged before."""
    script_keys = [
        keys.merged(episode_id), keys.STATS, keys.CHANGES, keys.CONFIDENCE,
        keys.EPISODE_LOG, keys.PARAMS, *_INSIGHT_KEYS,
    ]
    args = [dedupe_ttl, episode_json, log_retention, insight_retention, json.dumps(delta)]
    return bool(_run(client, MERGE_EPISODE, script_keys, args))


def top_insights(client: Client, k: int) -> dict[str, list[tuple[str, int]]]:
    """The ``k`` most frequent insights of each kind, as ``(text, count)``."""
    return parse_top_insights(_run(client, TOP_INSIGHTS, _INSIGHT_KEYS, [k]))


def queue_top_insights(pipe: redis.client.Pipeline, k: int) -> None:
    """Queue TOP_INSIGHTS on a pipeline; parse its reply with ``parse_top_insights``."""
    _run(pipe, TOP_INSIGHTS, _INSIGHT_KEYS, [k])


def parse_top_insights(raw: list[list[Any]]) -> dict[str, list[tuple[str, int]]]:
    """TOP_INSIGHTS' reply as ``{kind: [(text, count), ...]}``."""
    return {kind: _pairs(flat) for kind, flat in zip(keys.INSIGHT_KINDS, raw, strict=True)}


def release_lock(client: redis.Redis, key: str, token: str) -> bool:
    """Run RELEASE_LOCK; True when we held the lock and released it."""
    return bool(_run(client, RELEASE_LOCK, [key], [token]))


def _pairs(flat: list[Any]) -> list[tuple[str, int]]:
    return [(_text(flat[i]), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


_SCRIPTS: dict[str, Script] = {}


def _run(client: Client, source: str, script_keys: list[str], args: list[Any]) -> Any:
    """EVALSHA ``source`` on ``client``, loading it on the first miss."""
    script = _SCRIPTS.get(source)
    if script is None:
        script = _SCRIPTS[source] = client.register_script(source)
    return script(keys=script_keys, args=args, client=client)
