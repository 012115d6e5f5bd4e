"""Parameter versions: the compare-and-set that creates a new version exactly once and
drops the one leaving retention."""

from __future__ import annotations

import redis

from state import keys
from state.scripts._lua import _run

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
