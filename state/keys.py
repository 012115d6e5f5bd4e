"""Every Redis key the service uses, in one place."""

PREFIX = "ripmap:"
INSIGHT_KINDS = ("interactions", "structural", "signatures")

STATS = PREFIX + "stats"  # hash: episodes, proposals, pending_distill, ...
CHANGES = PREFIX + "changes"  # hash: "param:direction" -> count
CONFIDENCE = PREFIX + "confidence"  # hash: "param:direction" -> confidence sum
PARAMS = PREFIX + "params"  # hash: param -> current value
EPISODE_LOG = PREFIX + "episodes"  # list of episode JSON, newest first, trimmed
WISDOM_LATEST = PREFIX + "wisdom:latest"  # string: Wisdom JSON
WISDOM_HISTORY = PREFIX + "wisdom:history"  # list of Wisdom JSON, newest first, trimmed
DISTILL_LOCK = PREFIX + "lock:distill"
# The open-batch ledger (state/ledger.py): batches the producer sent, not yet merged or
# dead-lettered; the sweep re-sends one the broker lost.
# The reducer's inbox (state/inbox.py): episodes reasoned, waiting for the merge task.
INBOX = PREFIX + "inbox"  # hash: episode id -> episode JSON
INBOX_DRAINING = PREFIX + "inbox:draining"  # string: a drain task is queued or running
OPEN = PREFIX + "open"  # hash: batch id -> FailureBatch JSON
OPEN_SINCE = PREFIX + "open:since"  # zset: batch id -> when last sent
OPEN_MISSING = PREFIX + "open:missing"  # zset: batch id -> when first found in no queue
DEAD_LETTERS = PREFIX + "dlq"  # hash: id -> dead letter JSON
DEAD_LETTER_ORDER = PREFIX + "dlq:order"  # zset: id -> time
PARAMS_CURRENT = PREFIX + "params:current"  # string: current version number (absent: 0)
PARAMS_BEST = PREFIX + "params:best"  # string: best version number
PARAMS_SEQ = PREFIX + "params:seq"  # string: highest version number created
PENDING = PREFIX + "pending"  # hash: episode id -> vote JSON, for the current version only
PENDING_SINCE = PREFIX + "pending:since"  # string: when the first pending vote arrived
SCORES = PREFIX + "scores"  # zset: version -> mean NDCG, versions with enough cases
EVALS = PREFIX + "evals"  # hash: "<version>:cases" / ":sum" / ":sumsq" -> NDCG evidence
VERSION_BRIEFS = PREFIX + "versions:brief"  # hash: version -> {parent, reason, factors} JSON


def batch_seen(batch_id: str) -> str:
    """Set by the producer when a batch is enqueued: the same batch is enqueued once."""
    return f"{PREFIX}batch:{batch_id}"


def merged(episode_id: str) -> str:
    """Set by the reducer when an episode is merged: a redelivery changes nothing."""
    return f"{PREFIX}merged:{episode_id}"


def insights(kind: str) -> str:
    """Zset of normalised-insight hash -> times seen."""
    return f"{PREFIX}insights:{kind}"


def insight_text(kind: str) -> str:
    """Hash of normalised-insight hash -> the text as first seen."""
    return f"{PREFIX}insights:{kind}:text"


# celery beat's schedule and lock (celery-redbeat, worker/schedule.py): redbeat derives its
# keys from the prefix: "<prefix><entry name>" per entry (hash: definition, last run),
# "<prefix>:schedule" (zset: entry key -> next due time), "<prefix>:statics" (set: entry
# names from the configuration), and the lock every beat but the active one waits for.
BEAT_PREFIX = PREFIX + "beat:"
BEAT_LOCK = BEAT_PREFIX + "lock"  # string: the active beat's token, expiring (redbeat lock)


def distill_result(request_id: str) -> str:
    """The outcome of a distillation someone asked for, for them to read back."""
    return f"{PREFIX}distill:result:{request_id}"


def distill_tick(tick: int) -> str:
    """Set by the first beat tick of one distill interval: a second beat's tick skips."""
    return f"{PREFIX}distill:tick:{tick}"


# Streaming push (producer.push): per-repository buffers, and batches taken but not yet
# confirmed enqueued.
PUSH_REPOS = PREFIX + "push:repos"  # zset: repo -> arrival time of its oldest buffered failure
PUSH_PENDING = PREFIX + "push:pending"  # hash: token -> FailureBatch JSON taken, not yet sent
PUSH_PENDING_ORDER = PREFIX + "push:pending:order"  # zset: token -> time taken (or reclaimed)
PUSH_SEQ = PREFIX + "push:seq"  # counter: pending-batch tokens


def push_buffer(repo: str) -> str:
    """List of failure JSON waiting for a full batch of ``repo``, oldest first."""
    return f"{PREFIX}push:buffer:{repo}"


def param_version(version: int) -> str:
    """The JSON record of one parameter version."""
    return f"{PREFIX}params:v:{version}"


def evaluation_seen(evaluation_id: str) -> str:
    """Set when an evaluation is recorded: a redelivered report counts once."""
    return f"{PREFIX}eval-seen:{evaluation_id}"


# Anthropic API accounting (state/ratelimit.py, state/budget.py).
LIMITER_PREFIX = PREFIX + "limiter"  # key prefix of the `limits` library's moving windows
RATE_REQUESTS = "llm-requests"  # limits identifier: requests per window, fleet-wide
RATE_TOKENS = "llm-tokens"  # limits identifier: token units per window, fleet-wide
USAGE = PREFIX + "usage"  # hash: "<kind>:<usage field>" and "<kind>:calls" -> running total
BUDGET_LIMIT = PREFIX + "budget:limit"  # string: daily token budget set live (overrides settings)


def budget_used(day: str) -> str:
    """Counter of tokens used on one UTC day (``YYYY-MM-DD``), expiring a few days later."""
    return f"{PREFIX}budget:used:{day}"

# The closed loop (state/evaluations.py): registered repositories, and the versions due
# an evaluation on each.
REPOS = PREFIX + "repos"  # hash: repo name -> RegisteredRepo JSON
EVAL_DUE = PREFIX + "evaluate:due"  # zset: "<version>|<repo>" -> when it may be sent (again)
EVAL_RESULTS = PREFIX + "evaluations"  # hash: "<version>|<repo>" -> RepoEvaluation JSON


def eval_budget(repo: str) -> str:
    """Evaluations left on ``repo`` in a ``tune`` run (expires unless the run renews it)."""
    return f"{PREFIX}evaluate:budget:{repo}"

# Wisdom that transfers (state/presets.py): the features of each registered repository,
# cached when distillation computes them (a merge worker that cannot open a repository later
# still conditions presets on what was measured).
REPO_FEATURES = PREFIX + "repo-features"  # hash: repo name -> RepoFeatures JSON
