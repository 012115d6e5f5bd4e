"""The closed loop: taking one evaluation from a repository's budget."""

from __future__ import annotations

import redis

from state import keys
from state.scripts._lua import _run

TAKE_EVALUATION = """
-- Take one evaluation from a repository's budget (set by `tune` for the length of a run).
-- KEYS[1] budgets hash (repository -> evaluations left)
-- ARGV[1] repository name
-- Returns 1 when the evaluation may run (no budget set, or one left and now taken), else 0.
local left = redis.call('HGET', KEYS[1], ARGV[1])
if not left then return 1 end
if tonumber(left) <= 0 then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
return 1
"""


def take_evaluation(client: redis.Redis, repo: str) -> bool:
    """Run TAKE_EVALUATION; True when an evaluation on ``repo`` may run."""
    return bool(_run(client, TAKE_EVALUATION, [keys.EVAL_BUDGETS], [repo]))
