"""Every Lua script the service runs, each wrapped by one typed function, grouped by domain.

Scripts run atomically in Redis: that is how concurrent reducers and distillers
stay correct without locks around read-modify-write cycles.

Each script's text opens with its contract: the ``-- KEYS[...]`` and ``-- ARGV[...]`` it
takes and what it returns. The texts are a wire contract with data already in Redis.

- ``merge``: MERGE_EPISODE (the reducer's merge, exactly once)
- ``ledger``: CLAIM_BATCHES, SIGHT_MISSING (the open-batch ledger)
- ``inbox``: INBOX_PUT, INBOX_DONE (the reducer's inbox and its drain flag)
- ``context``: TOP_INSIGHTS, STEP_CONTEXT, EPISODE_CONTEXT (snapshot reads)
- ``versions``: STEP_VERSION (creating a parameter version)
- ``push``: PUSH_TAKE, CLAIM_STALE_BATCHES (streaming push buffers)
- ``evaluations``: TAKE_EVALUATION (a repository's evaluation budget, the closed loop)
- ``_lua``: the client type, running a script, the shared key lists, reply decoders

Callers use the package: ``from state import scripts; scripts.merge_episode(...)``.
"""

from state.scripts._lua import LEDGER_KEYS, Client
from state.scripts.context import (
    EPISODE_CONTEXT,
    STEP_CONTEXT,
    TOP_INSIGHTS,
    EpisodeContext,
    episode_context,
    parse_top_insights,
    queue_top_insights,
    step_context,
)
from state.scripts.evaluations import TAKE_EVALUATION, take_evaluation
from state.scripts.inbox import INBOX_DONE, INBOX_PUT, inbox_done, inbox_put
from state.scripts.ledger import CLAIM_BATCHES, SIGHT_MISSING, claim_batches, sight_missing
from state.scripts.merge import MERGE_EPISODE, MergeResult, merge_episode
from state.scripts.push import (
    CLAIM_STALE_BATCHES,
    PUSH_TAKE,
    Taken,
    claim_stale_batches,
    parse_taken,
    push_take,
    queue_push_take,
)
from state.scripts.versions import STEP_VERSION, step_version

__all__ = [
    "CLAIM_BATCHES",
    "CLAIM_STALE_BATCHES",
    "EPISODE_CONTEXT",
    "INBOX_DONE",
    "INBOX_PUT",
    "LEDGER_KEYS",
    "MERGE_EPISODE",
    "PUSH_TAKE",
    "SIGHT_MISSING",
    "STEP_CONTEXT",
    "STEP_VERSION",
    "TAKE_EVALUATION",
    "TOP_INSIGHTS",
    "Client",
    "EpisodeContext",
    "MergeResult",
    "Taken",
    "claim_batches",
    "claim_stale_batches",
    "episode_context",
    "inbox_done",
    "inbox_put",
    "merge_episode",
    "parse_taken",
    "parse_top_insights",
    "push_take",
    "queue_push_take",
    "queue_top_insights",
    "sight_missing",
    "step_context",
    "step_version",
    "take_evaluation",
]
