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
DEAD_LETTERS = PREFIX + "dlq"  # hash: id -> dead letter JSON
DEAD_LETTER_ORDER = PREFIX + "dlq:order"  # zset: id -> time


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


def distill_result(request_id: str) -> str:
    """The outcome of a distillation someone asked for, for them to read back."""
    return f"{PREFIX}distill:result:{request_id}"
