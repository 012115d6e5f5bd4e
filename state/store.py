"""Reading and writing the shared state in Redis: the one home for it.

The CLI and the HTTP API read through these functions too, so no key name is
spelled outside ``state.keys``.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from schemas.params import PARAM_NAMES, ParameterPoint
from schemas.scratchpad import ChangeStat, Insight, ScratchpadSummary
from schemas.settings import Settings, get_settings
from schemas.wisdom import Wisdom
from state import insights, keys, scripts

Pipe = redis.client.Pipeline

SENTINEL_SCHEME = "sentinel"  # kombu's form: sentinel://host:port;sentinel://host:port/db
SENTINEL_DEFAULT_PORT = 26379
_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL,
              "none": ssl.CERT_NONE}


@dataclass(frozen=True)
class RedisOptions:
    """How to reach a Redis beyond what its URL says (settings ``redis_ssl_*`` and
    ``sentinel_master``): TLS files and checks for ``rediss://``, and the name of the
    master the sentinels of a ``sentinel://`` URL monitor."""

    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cert_reqs: str = "required"
    sentinel_master: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> RedisOptions:
        """From ``settings``, or from the environment's (what every process reads)."""
        s = settings if settings is not None else get_settings()
        return cls(s.redis_ssl_ca_certs, s.redis_ssl_certfile, s.redis_ssl_keyfile,
                   s.redis_ssl_cert_reqs, s.sentinel_master)

    def ssl_kwargs(self) -> dict[str, Any]:
        """redis-py's (and kombu's) TLS options: the check, and the files that are set."""
        files = {"ssl_ca_certs": self.ssl_ca_certs, "ssl_certfile": self.ssl_certfile,
                 "ssl_keyfile": self.ssl_keyfile}
        return {"ssl_cert_reqs": _CERT_REQS[self.ssl_cert_reqs],
                **{k: v for k, v in files.items() if v}}

    def master(self) -> str:
        """The Sentinel master's name; raises when it is not set."""
        if not self.sentinel_master:
            raise ValueError("a sentinel:// URL needs the master's name: set "
                             "RIPMAP_SENTINEL_MASTER")
        return self.sentinel_master


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``sentinel://`` URL names: the sentinels, and the master's database and
    credentials (taken from the first address, as kombu does)."""

    sentinels: list[tuple[str, int]]
    db: int
    username: str | None
    password: str | None


def url_scheme(url: str) -> str:
    """The URL's scheme, lower case."""
    return urlsplit(url).scheme.lower()


def parse_sentinel_url(url: str) -> SentinelTarget:
    """``sentinel://[[user]:password@]host[:port][/db][;sentinel://host[:port]]...``: one
    or more sentinels separated by ``;`` (kombu's form, so one URL serves the broker and the
    state store); port 26379 unless given."""
    nodes, first = [], None
    for part in url.split(";"):
        parts = urlsplit(part.strip())
        if parts.scheme.lower() != SENTINEL_SCHEME or not parts.hostname:
            raise ValueError(f"not a sentinel address: {part.strip()!r} (expected "
                             "sentinel://host:port, separated by ';')")
        nodes.append((parts.hostname, parts.port or SENTINEL_DEFAULT_PORT))
        first = first or parts
    assert first is not None  # split always yields a part
    path = first.path.strip("/")
    return SentinelTarget(nodes, int(path) if path else 0,
                          unquote(first.username) if first.username else None,
                          unquote(first.password) if first.password else None)


class SentinelMasterConnection(SentinelManagedConnection):
    """redis-py's Sentinel-managed connection, asking the sentinels for the master on every
    reconnection. redis-py (8.1, redis/redis-py#3874) reconnects a connection a failed
    command dropped straight to the address it had, retrying the dead primary until the
    retries run out (~9 s) and failing the command though the sentinels named the new
    primary within ~2 s; here a reconnection goes through the master's discovery."""

    def connect_check_health(self, check_health: bool = True,
                             retry_socket_connect: bool = True) -> None:
        if retry_socket_connect and not self._sock:  # not from connect_to: find the master
            self.connect()  # type: ignore[no-untyped-call]
            return
        super().connect_check_health(check_health, retry_socket_connect)


class BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """redis-py's Sentinel-managed pool (connections go to the master the sentinels name,
    re-asked after a connection fails), waiting for a free connection like ``connect``'s
    pool instead of failing beyond ``max_connections``."""


def connect(url: str, max_connections: int = 512, options: RedisOptions | None = None,
            *, decode: bool = True, probe: bool = False) -> redis.Redis:
    """A client that decodes to str (unless ``decode`` is False) and retries briefly
    through a Redis restart (a ``probe`` client, for health checks, answers within 2 s and
    never retries).

    Its pool makes a caller wait for a free connection instead of failing: hundreds of
    episode threads share one client per process.

    ``rediss://`` takes the TLS options from ``options`` (by default the settings' in the
    environment; ``ssl_*`` in the URL's query win); ``sentinel://`` connects to the master
    the sentinels name (``options.sentinel_master``), and after a failover to the new one:
    a command that fails on the old master is retried on the new.
    """
    common: dict[str, Any] = {
        "decode_responses": decode,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=0 if probe else 8),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
        **({"socket_timeout": 2, "socket_connect_timeout": 2} if probe else {}),
    }
    scheme = url_scheme(url)
    if scheme == SENTINEL_SCHEME:
        return _sentinel_master(url, options or RedisOptions.from_settings(), max_connections,
                                common)
    if scheme == "rediss":
        common = {**(options or RedisOptions.from_settings()).ssl_kwargs(), **common}
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=30, **common)
    return redis.Redis(connection_pool=pool)


def _sentinel_master(url: str, options: RedisOptions, max_connections: int,
                     common: dict[str, Any]) -> redis.Redis:
    target = parse_sentinel_url(url)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        target.sentinels, sentinel_kwargs={"socket_timeout": 5, "socket_connect_timeout": 5},
        socket_connect_timeout=5)
    return cast(redis.Redis, sentinel.master_for(  # type: ignore[no-untyped-call]
        options.master(), redis_class=redis.Redis, connection_pool_class=BlockingSentinelPool,
        connection_class=SentinelMasterConnection, max_connections=max_connections, timeout=30,
        db=target.db, username=target.username, password=target.password, **common))


def broker_use_ssl(url: str, options: RedisOptions | None = None) -> dict[str, Any] | None:
    """Celery's ``broker_use_ssl`` for the broker at ``url``: the TLS options for a
    ``rediss://`` broker (without them kombu would not check the server's certificate;
    ``ssl_*`` in the URL's query still win), None for any other."""
    if url_scheme(url) != "rediss":
        return None
    return (options or RedisOptions.from_settings()).ssl_kwargs()


def broker_sentinel_options(url: str, options: RedisOptions | None = None) -> dict[str, Any]:
    """The broker transport options a ``sentinel://`` broker needs (kombu's
    ``master_name``); none for any other."""
    if url_scheme(url) != SENTINEL_SCHEME:
        return {}
    return {"master_name": (options or RedisOptions.from_settings()).master()}


def get_params(client: redis.Redis) -> ParameterPoint:
    """The current parameters (defaults for any never stepped)."""
    return params_from(cast(dict[str, str], client.hgetall(keys.PARAMS)))


def params_from(raw: dict[str, str]) -> ParameterPoint:
    """The parameters from their Redis hash (defaults for missing fields)."""
    return ParameterPoint.from_mapping({k: v for k, v in raw.items() if k in PARAM_NAMES})


def extend_batches(client: redis.Redis, batch_ids: list[str], ttl: int,
                   pipe: Pipe | None = None) -> None:
    """Keep the claims of sent batches for the whole dedupe period, in one round trip (or
    queued on ``pipe``)."""
    if not batch_ids:
        return
    own = pipe is None
    pipe = client.pipeline(transaction=False) if pipe is None else pipe
    for batch_id in batch_ids:
        pipe.expire(keys.batch_seen(batch_id), ttl)
    if own:
        pipe.execute()


def merged_flags(client: redis.Redis, episode_ids: list[str]) -> list[bool]:
    """For each episode id, whether it has been merged, in one round trip."""
    if not episode_ids:
        return []
    pipe = client.pipeline(transaction=False)
    for eid in episode_ids:
        pipe.exists(keys.merged(eid))
    return [bool(x) for x in pipe.execute()]


def summary(client: redis.Redis, top_k: int = 10) -> ScratchpadSummary:
    """Every aggregate of the scratchpad, in one round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.STATS)
    pipe.hgetall(keys.PARAMS)
    pipe.hgetall(keys.CHANGES)
    pipe.hgetall(keys.CONFIDENCE)
    scripts.queue_top_insights(pipe, top_k)
    stats, params, changes, conf, top = pipe.execute()
    return _summary_from(stats, params, changes, conf, scripts.parse_top_insights(top))


def recent_episodes(client: redis.Redis, n: int) -> list[dict[str, Any]]:
    """The ``n`` most recently merged episodes, newest first, as JSON dicts."""
    return [json.loads(raw) for raw in client.lrange(keys.EPISODE_LOG, 0, n - 1)]


def latest_wisdom(client: redis.Redis) -> Wisdom | None:
    """The newest distillation, if any."""
    raw = client.get(keys.WISDOM_LATEST)
    return Wisdom.model_validate_json(raw) if raw else None


def save_wisdom(client: redis.Redis, wisdom: Wisdom, *, consumed: int, keep: int) -> None:
    """Store a new wisdom version and count ``consumed`` merges as distilled, atomically."""
    raw = wisdom.model_dump_json()
    pipe = client.pipeline(transaction=True)
    pipe.set(keys.WISDOM_LATEST, raw)
    pipe.lpush(keys.WISDOM_HISTORY, raw)
    pipe.ltrim(keys.WISDOM_HISTORY, 0, keep - 1)
    pipe.hset(keys.STATS, "wisdom_version", wisdom.version)
    # subtract what this run saw rather than reset: merges during the run stay pending
    pipe.hincrby(keys.STATS, "pending_distill", -consumed)
    pipe.execute()


def add_insight(client: redis.Redis, kind: str, text: str) -> None:
    """Count one insight of ``kind`` outside an episode merge (e.g. a rollback's lesson)."""
    pipe = client.pipeline(transaction=True)
    for digest, first in insights.items([text]):
        pipe.zincrby(keys.insights(kind), 1, digest)
        pipe.hsetnx(keys.insight_text(kind), digest, first)
    pipe.execute()


def record_distill_result(client: redis.Redis, request_id: str, result: dict[str, Any]) -> None:
    """Keep a requested distillation's outcome for an hour, for the requester to read."""
    client.set(keys.distill_result(request_id), json.dumps(result), ex=3_600)


def distill_result(client: redis.Redis, request_id: str) -> dict[str, Any] | None:
    """The outcome of a requested distillation, once it ran."""
    raw = client.get(keys.distill_result(request_id))
    return dict(json.loads(raw)) if raw else None


def _summary_from(
    stats: dict[str, str],
    params: dict[str, str],
    changes: dict[str, str],
    conf: dict[str, str],
    top: dict[str, list[tuple[str, int]]],
) -> ScratchpadSummary:
    episodes = int(stats.get("episodes", 0))
    return ScratchpadSummary(
        episodes=episodes,
        unparsable=int(stats.get("unparsable", 0)),
        proposals=int(stats.get("proposals", 0)),
        dropped_proposals=int(stats.get("dropped_proposals", 0)),
        pending_distill=int(stats.get("pending_distill", 0)),
        mean_confidence=float(stats.get("confidence_sum", 0.0)) / max(episodes, 1),
        params=params_from(params),
        changes=_change_stats(changes, conf),
        wisdom_version=int(stats.get("wisdom_version", 0)),
        last_merged_at=float(stats["last_merged_at"]) if "last_merged_at" in stats else None,
        **{kind: [Insight(text=t, count=c) for t, c in top[kind]] for kind in keys.INSIGHT_KINDS},
    )


def _change_stats(changes: dict[str, str], conf: dict[str, str]) -> list[ChangeStat]:
    out = []
    for key, count in changes.items():
        param, direction = key.split(":", 1)
        n = int(count)
        out.append(ChangeStat(param=param, direction=direction, count=n,
                              mean_confidence=float(conf.get(key, 0.0)) / max(n, 1)))
    return sorted(out, key=lambda c: (-c.count, c.param, c.direction))


def due_push_repos(client: redis.Redis, cutoff: float, limit: int = 1_000) -> list[str]:
    """Repositories whose oldest buffered failure arrived at or before ``cutoff``."""
    return cast(list[str], client.zrangebyscore(keys.PUSH_REPOS, "-inf", cutoff, 0, limit))


def ack_pushed(client: redis.Redis, tokens: list[str], pipe: Pipe | None = None) -> None:
    """Forget pending push batches that were enqueued: nothing will re-send them (queued on
    ``pipe`` when given)."""
    if not tokens:
        return
    own = pipe is None
    pipe = client.pipeline(transaction=True) if pipe is None else pipe
    pipe.hdel(keys.PUSH_PENDING, *tokens)
    pipe.zrem(keys.PUSH_PENDING_ORDER, *tokens)
    if own:
        pipe.execute()


def push_backlog(client: redis.Redis) -> tuple[dict[str, int], int]:
    """Failures waiting per repository, and batches taken but not yet confirmed sent."""
    repos = cast(list[str], client.zrange(keys.PUSH_REPOS, 0, -1))
    pipe = client.pipeline(transaction=False)
    for repo in repos:
        pipe.llen(keys.push_buffer(repo))
    pipe.hlen(keys.PUSH_PENDING)
    *lengths, pending = pipe.execute()
    return {r: int(n) for r, n in zip(repos, lengths, strict=True) if n}, int(pending)
