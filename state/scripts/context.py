"""Snapshot reads: the top insights, what a consensus step starts from and everything an
episode reads before reasoning, each in one round trip that no write lands in between."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from state import keys
from state.scripts._lua import _INSIGHT_KEYS, LEDGER_KEYS, Client, _pairs, _run

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
