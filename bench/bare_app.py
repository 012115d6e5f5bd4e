"""The overhead baseline's Celery app: ``celery -A bench.bare_app worker``.

Environment: ``RIPMAP_BENCH_BARE_PREFIX`` names the variant's queues and counter;
``RIPMAP_BENCH_TASK_EVENTS=0`` turns task events off. See ``bench.bare``.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import redis
from celery import Celery

from bench.bare import TASK_A, TASK_B, config, done_key
from schemas.settings import get_settings

PREFIX = os.environ.get("RIPMAP_BENCH_BARE_PREFIX", "bare")
app = Celery("ripmap_bare")
app.conf.update(config(PREFIX, os.environ.get("RIPMAP_BENCH_TASK_EVENTS", "1") != "0"))


@functools.cache
def _state() -> redis.Redis:
    return redis.Redis.from_url(get_settings().state_url)


@app.task(name=TASK_A)  # type: ignore[untyped-decorator]
def task_a(payload: Any) -> int:
    """No-op: takes the same payload an episode does, hands a token to B."""
    return 1


@app.task(name=TASK_B)  # type: ignore[untyped-decorator]
def task_b(token: int) -> None:
    """No-op but for counting the chain as done."""
    _state().incr(done_key(PREFIX))
