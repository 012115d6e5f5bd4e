"""Every Lua script the service runs, each wrapped by one typed function.

Scripts run atomically in Redis: that is how concurrent reducers and distillers
stay correct without locks around read-modify-write cycles.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script

from state import keys

Client = redis.Redis | redis.client.Pipeline

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

CLAIM_BATCHES = """
-- Claim batch ids for sending and record each claimed batch in the open-batch ledger.
-- KEYS[1] open batches  KEYS[2] open since  KEYS[3] open missing
-- ARGV[1] claim ttl (s)  ARGV[2] now (s)  ARGV[3] force: '1' claims even a seen id
-- ARGV[4..] triples: batch-seen key, batch id, batch JSON
-- Returns, per batch, 1 if claimed now, 0 if claimed before (and not forced).
local out = {}
for i = 4, #ARGV, 3 do
  local fresh = redis.call('SET', ARGV[i], '1', 'NX', 'EX', ARGV[1])
  if not fresh and ARGV[3] == '1' then
    redis.call('SET', ARGV[i], '1', 'EX', ARGV[1])
  end
  if fresh or ARGV[3] == '1' then
    -- recorded before the send: a producer that dies between here and the send leaves
    -- the batch open, and the sweep sends it
    redis.call('HSET', KEYS[1], ARGV[i + 1], ARGV[i + 2])
    redis.call('ZADD', KEYS[2], ARGV[2], ARGV[i + 1])
    redis.call('ZREM', KEYS[3], ARGV[i + 1])
  end
  out[#out + 1] = fresh and 1 or 0
end
return out
"""

SIGHT_MISSING = """
-- Record which old open batches a sweep found in no queue; return those seen missing before.
-- KEYS[1] open since  KEYS[2] open missing
-- ARGV[1] now (s)  ARGV[2] confirm after (s)  ARGV[3] n missing
-- ARGV[4 .. 3+n] batch ids found missing  ARGV[4+n ..] batch ids found in a queue
-- Returns the missing batch ids first sighted at least ARGV[2] seconds ago.
local n, cutoff, out = tonumber(ARGV[3]), tonumber(ARGV[1]) - tonumber(ARGV[2]), {}
for i = 4 + n, #ARGV do redis.call('ZREM', KEYS[2], ARGV[i]) end
for i = 4, 3 + n do
  -- a batch merged since the sweep read the ledger is no longer open: not sighted
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    local first = redis.call('ZSCORE', KEYS[2], ARGV[i])
    if not first then
      redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
    elseif tonumber(first) <= cutoff then
      out[#out + 1] = ARGV[i]
    end
  end
end
return out
"""

INBOX_PUT = """
-- Leave a reasoned episode for the reducer; say whether a drain task must be sent.
-- KEYS[1] inbox  KEYS[2] draining flag
-- ARGV[1] episode id  ARGV[2] episode JSON  ARGV[3] flag ttl (s)
-- Returns 1 when no drain task was pending (the caller sends one), else 0.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then return 1 end
return 0
"""

INBOX_DONE = """
-- End a drain if the inbox is empty, in one step with the check: an episode left after it
-- finds the flag gone and sends a new drain task.
-- KEYS[1] inbox  KEYS[2] draining flag
-- ARGV[1] flag ttl (s)
-- Returns 1 when the inbox was empty (flag cleared), else 0 (flag's ttl renewed).
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
  return 1
end
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 0
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

STEP_CONTEXT = """
-- What a consensus step starts from, read atomically: a step can't land between the reads.
-- KEYS[1] current version  KEYS[2] params hash  KEYS[3] pending votes
-- Returns {current version, flat params hash, pending vote JSONs}
return {redis.call('GET', KEYS[1]) or '0', redis.call('HGETALL', KEYS[2]),
        redis.call('HVALS', KEYS[3])}
"""

EPISODE_CONTEXT = """
-- Everything an episode reads before reasoning, in one round trip and one snapshot.
-- KEYS[1] current version  KEYS[2] params hash  KEYS[3] pending votes
-- KEYS[4] the episode's merged marker  KEYS[5] version briefs  KEYS[6] evaluations
-- KEYS[7..12] insight zset, insight text hash, for each kind in keys.INSIGHT_KINDS
-- KEYS[13] open batches  KEYS[14] open since  KEYS[15] open missing
-- ARGV[1] insights per kind  ARGV[2] versions in the trajectory  ARGV[3] batch id
-- Returns {merged 0|1, current version, flat params hash, pending vote JSONs,
--          {brief, cases, sum} per version from the current one down,
--          {text, count, ...} per insight kind}
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if redis.call('EXISTS', KEYS[4]) == 1 then
  -- merged already: a copy sent again after the merge closes its ledger entry here
  redis.call('HDEL', KEYS[13], ARGV[3])
  redis.call('ZREM', KEYS[14], ARGV[3])
  redis.call('ZREM', KEYS[15], ARGV[3])
end
local trajectory = {}
-- every new version becomes current, so the newest versions are current, current - 1, ...
for v = current, math.max(current - tonumber(ARGV[2]) + 1, 0), -1 do
  local n = tostring(v)
  trajectory[#trajectory + 1] = redis.call('HGET', KEYS[5], n) or ''
  trajectory[#trajectory + 1] = redis.call('HGET', KEYS[6], n .. ':cases') or '0'
  trajectory[#trajectory + 1] = redis.call('HGET', KEYS[6], n .. ':sum') or '0'
end
local out = {redis.call('EXISTS', KEYS[4]), tostring(current), redis.call('HGETALL', KEYS[2]),
             redis.call('HVALS', KEYS[3]), trajectory}
for k = 1, 3 do
  local top = redis.call('ZREVRANGE', KEYS[5 + 2 * k], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
  local flat = {}
  for i = 1, #top, 2 do
    flat[#flat + 1] = redis.call('HGET', KEYS[6 + 2 * k], top[i]) or top[i]
    flat[#flat + 1] = top[i + 1]
  end
  out[#out + 1] = flat
end
return out
"""

STEP_VERSION = """
-- Create parameter version ARGV[3] from current version ARGV[1], exactly once, and drop
-- the version that falls out of retention (never the best one).
-- KEYS[1] current version  KEYS[2] version sequence  KEYS[3] pending votes
-- KEYS[4] pending-since  KEYS[5] new version's record  KEYS[6] params hash
-- KEYS[7] version briefs  KEYS[8] best version  KEYS[9] scores  KEYS[10] evaluations
-- KEYS[11] record of the version leaving retention
-- ARGV[1] expected current version  ARGV[2] expected pending votes (-1: don't check)
-- ARGV[3] new version number  ARGV[4] new version JSON  ARGV[5] its brief JSON
-- ARGV[6] number of the version leaving retention (< 1: none)  ARGV[7..] param, value, ...
-- Returns 1 created; 0 the current version moved on (another step won); -1 the state
-- changed between our read and this call (re-read and retry).
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) >= 0 and redis.call('HLEN', KEYS[3]) ~= tonumber(ARGV[2]) then
  return -1
end
if tonumber(redis.call('GET', KEYS[2]) or '0') + 1 ~= tonumber(ARGV[3]) then return -1 end
redis.call('SET', KEYS[5], ARGV[4])
redis.call('HSET', KEYS[7], ARGV[3], ARGV[5])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('HSET', KEYS[6], unpack(ARGV, 7))
local old = ARGV[6]
if tonumber(old) >= 1 and redis.call('GET', KEYS[8]) ~= old then
  redis.call('DEL', KEYS[11])
  redis.call('HDEL', KEYS[7], old)
  redis.call('ZREM', KEYS[9], old)
  redis.call('HDEL', KEYS[10], old .. ':cases', old .. ':sum', old .. ':sumsq')
end
return 1
"""

LEDGER_KEYS = [keys.OPEN, keys.OPEN_SINCE, keys.OPEN_MISSING]
_INSIGHT_KEYS = [
    k for kind in keys.INSIGHT_KINDS for k in (keys.insights(kind), keys.insight_text(kind))
]


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


def claim_batches(
    client: redis.Redis, batches: list[tuple[str, str]], ttl: int, *, force: bool = False
) -> list[bool]:
    """Run CLAIM_BATCHES on ``(batch id, batch JSON)`` pairs: per batch, claimed now?"""
    args: list[Any] = [ttl, time.time(), "1" if force else "0"]
    for batch_id, raw in batches:
        args += [keys.batch_seen(batch_id), batch_id, raw]
    return [bool(x) for x in _run(client, CLAIM_BATCHES, LEDGER_KEYS, args)]


def sight_missing(
    client: redis.Redis, missing: list[str], present: list[str], now: float, confirm: float
) -> list[str]:
    """Run SIGHT_MISSING: the ``missing`` batch ids also found missing ``confirm`` s before."""
    args = [now, confirm, len(missing), *missing, *present]
    return [str(x) for x in _run(client, SIGHT_MISSING, [keys.OPEN_SINCE, keys.OPEN_MISSING],
                                 args)]


def inbox_put(client: redis.Redis, episode_id: str, episode_json: str, ttl: int) -> bool:
    """Run INBOX_PUT: True when the caller must send a drain task."""
    return bool(_run(client, INBOX_PUT, [keys.INBOX, keys.INBOX_DRAINING],
                     [episode_id, episode_json, ttl]))


def inbox_done(client: redis.Redis, ttl: int) -> bool:
    """Run INBOX_DONE: True when the inbox was empty and the drain may end."""
    return bool(_run(client, INBOX_DONE, [keys.INBOX, keys.INBOX_DRAINING], [ttl]))


def queue_top_insights(pipe: redis.client.Pipeline, k: int) -> None:
    """Queue TOP_INSIGHTS on a pipeline; parse its reply with ``parse_top_insights``."""
    _run(pipe, TOP_INSIGHTS, _INSIGHT_KEYS, [k])


def parse_top_insights(raw: list[list[Any]]) -> dict[str, list[tuple[str, int]]]:
    """TOP_INSIGHTS' reply as ``{kind: [(text, count), ...]}``."""
    return {kind: _pairs(flat) for kind, flat in zip(keys.INSIGHT_KINDS, raw, strict=True)}


def step_context(client: Client) -> tuple[int, dict[str, str], list[str]]:
    """Run STEP_CONTEXT: (current version, params hash, pending vote JSONs)."""
    current, flat, votes = _run(client, STEP_CONTEXT,
                                [keys.PARAMS_CURRENT, keys.PARAMS, keys.PENDING], [])
    return int(current), dict(zip(flat[::2], flat[1::2], strict=True)), list(votes)


@dataclass(frozen=True)
class EpisodeContext:
    """What EPISODE_CONTEXT read: ``trajectory`` rows are (version, brief JSON or '',
    cases, NDCG sum), newest first."""

    merged: bool
    version: int
    params: dict[str, str]
    votes: list[str]
    trajectory: list[tuple[int, str, int, float]]
    knowledge: dict[str, list[tuple[str, int]]]


def episode_context(client: Client, episode_id: str, top_k: int, versions: int
                    ) -> EpisodeContext:
    """Run EPISODE_CONTEXT: one round trip for everything an episode reads."""
    script_keys = [keys.PARAMS_CURRENT, keys.PARAMS, keys.PENDING, keys.merged(episode_id),
                   keys.VERSION_BRIEFS, keys.EVALS, *_INSIGHT_KEYS, *LEDGER_KEYS]
    merged, current, flat, votes, rows, *top = _run(client, EPISODE_CONTEXT, script_keys,
                                                    [top_k, versions, episode_id])
    version = int(current)
    trajectory = [(version - i // 3, rows[i], int(rows[i + 1]), float(rows[i + 2]))
                  for i in range(0, len(rows), 3)]
    return EpisodeContext(bool(merged), version, dict(zip(flat[::2], flat[1::2], strict=True)),
                          list(votes), trajectory, parse_top_insights(top))


def step_version(
    client: redis.Redis,
    expected_current: int,
    expected_pending: int,
    record: tuple[int, str, str],
    values: dict[str, float],
    retention: int,
) -> int:
    """Run STEP_VERSION with ``record`` = (number, JSON, brief JSON): 1 created, 0 another
    step won, -1 retry after re-reading."""
    number, record_json, brief_json = record
    leaving = number - retention
    script_keys = [keys.PARAMS_CURRENT, keys.PARAMS_SEQ, keys.PENDING, keys.PENDING_SINCE,
                   keys.param_version(number), keys.PARAMS, keys.VERSION_BRIEFS,
                   keys.PARAMS_BEST, keys.SCORES, keys.EVALS,
                   keys.param_version(max(leaving, 0))]
    flat = [x for name, value in values.items() for x in (name, repr(value))]
    args = [expected_current, expected_pending, number, record_json, brief_json, leaving, *flat]
    return int(_run(client, STEP_VERSION, script_keys, args))


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


def _pairs_text(flat: list[Any]) -> list[tuple[str, str]]:
    return [(_text(flat[i]), _text(flat[i + 1])) for i in range(0, len(flat), 2)]
