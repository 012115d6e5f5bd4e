"""Operational readings shared by ``status``, the API and the dashboard: one home for them."""

from __future__ import annotations

import time

import redis

from schemas.dashboard import Operations
from schemas.settings import Settings
from schemas.tasks import EPISODE_QUEUE, MERGE_QUEUE
from state import budget, deadletters, inbox, ledger, store


def queue_depths(broker_url: str) -> dict[str, int]:
    """Messages waiting on each queue (works for Redis and AMQP brokers)."""
    # imported on demand: kombu is only needed by this reading, not by every importer
    from kombu.connection import Connection

    depths = {}
    with Connection(broker_url, connect_timeout=5, ssl=store.broker_use_ssl(broker_url),
                    transport_options=store.broker_sentinel_options(broker_url)) as conn:
        channel = conn.default_channel
        for queue in (EPISODE_QUEUE, MERGE_QUEUE):
            try:
                depths[queue] = int(channel.queue_declare(queue, passive=True).message_count)
            except Exception:  # a queue never declared is empty
                depths[queue] = 0
    return depths


def episodes_per_minute(client: redis.Redis, window: float = 600.0) -> float:
    """Merged episodes per minute over the last ``window`` seconds (from the episode log)."""
    since = time.time() - window
    recent = [e for e in store.recent_episodes(client, 1_000) if e["finished_at"] >= since]
    return len(recent) / (window / 60.0)


def operations(client: redis.Redis, settings: Settings) -> Operations:
    """Queues, batches in flight (sent, not yet merged), episodes waiting for the reducer,
    batches the broker lost and the sweep sent again, dead letters, token totals and
    today's budget."""
    summary = store.summary(client, 1)
    spend = budget.state(client, settings)
    tokens: dict[str, int] = {}
    for per_kind in budget.totals(client).values():
        for name, n in per_kind.items():
            tokens[name] = tokens.get(name, 0) + n
    return Operations(
        episodes=summary.episodes,
        episodes_per_minute=round(episodes_per_minute(client), 2),
        queues=queue_depths(settings.broker),
        dead_letters=deadletters.count(client),
        open_batches=ledger.open_count(client),
        awaiting_merge=inbox.count(client),
        resent_by_ledger=ledger.resent_count(client),
        tokens=tokens,
        budget_used_today=spend.used,
        budget_limit=spend.limit,
        budget_paused_reason=spend.reason,
    )
