"""The reducer's inbox: leaving a reasoned episode (and asking for a drain when none is
pending), and ending a drain only when the inbox is empty."""

from __future__ import annotations

import redis

from state import keys
from state.scripts._lua import _run

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


def inbox_put(client: redis.Redis, episode_id: str, episode_json: str, ttl: int) -> bool:
    """Run INBOX_PUT: True when the caller must send a drain task."""
    return bool(_run(client, INBOX_PUT, [keys.INBOX, keys.INBOX_DRAINING],
                     [episode_id, episode_json, ttl]))


def inbox_done(client: redis.Redis, ttl: int) -> bool:
    """Run INBOX_DONE: True when the inbox was empty and the drain may end."""
    return bool(_run(client, INBOX_DONE, [keys.INBOX, keys.INBOX_DRAINING], [ttl]))
