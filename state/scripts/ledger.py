"""The open-batch ledger: claiming batch ids for sending (recording each in the ledger) and
the sweep's sightings of open batches found in no queue."""

from __future__ import annotations

import time
from typing import Any

import redis

from state import keys
from state.scripts._lua import LEDGER_KEYS, _run

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
