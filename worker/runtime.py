"""Per-process singletons: settings, the state-store client, the reasoner."""

from __future__ import annotations

import functools

import redis

from schemas.settings import Settings, get_settings
from state import ledger, store
from worker.reasoners import get_reasoner
from worker.reasoners.base import Reasoner


@functools.cache
def settings() -> Settings:
    """This process's settings, read once."""
    return get_settings()


@functools.cache
def state() -> redis.Redis:
    """This process's state-store client (thread-safe, pooled)."""
    return store.connect(settings().state_url)


@functools.cache
def broker() -> ledger.Broker:
    """What this process's ledger sweep reads the broker through: a client of the broker's
    Redis (to read its queues, not to consume), or, for RabbitMQ or any other kind, a
    ``ledger.ConfirmingBroker`` (the sweep then trusts what the broker confirmed)."""
    return ledger.connect_broker(settings().broker)


def reasoner() -> Reasoner:
    """This process's reasoner (``get_reasoner`` builds it once, under its lock: the first
    episodes start on many threads)."""
    return get_reasoner(settings())
