"""The closed loop: spending one evaluation of a repository's budget."""

from __future__ import annotations

import redis

from state import keys
from state.scripts._lua import _run

TAKE_EVALUATION = """
-- Spend one evaluation of a repository's budget (set by `tune` for the length of a run).
-- KEYS[1] the repository's budget (evaluations left; absent: no budget)
-- Returns 1 when one was spent or no budget is set, 0 when it was spent already.
local left = redis.call('GET', KEYS[1])
if not left then return 1 end
if tonumber(left) <= 0 then return 0 end
redis.call('DECR', KEYS[1])
return 1
"""


def take_evaluation(client: redis.Redis, repo: str) -> bool:
    """Run TAKE_EVALUATION on ``repo``'s budget; False when it was spent already."""
    return bool(_run(client, TAKE_EVALUATION, [keys.eval_budget(repo)], []))
