"""The daily token budget and the running usage totals of every LLM call.

Every successful call adds its usage (input, output, cache creation and cache read tokens,
summed) to a per-UTC-day counter in Redis, shared by the whole fleet. Once the day's
total reaches the budget, new calls pause: ``check`` raises ``Paused`` and the episode task
re-queues itself to look again later (``settings.llm_pause_retry_seconds``), so queued
batches wait rather than fail. Calls already in flight finish, so the day can end slightly
over budget. The budget is ``settings.llm_daily_token_budget`` (0 = no cap), or a value
set live with ``set_limit`` (no worker restart needed).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import redis

from schemas.episode import Usage
from schemas.settings import Settings
from state import keys

USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                "cache_read_input_tokens")
DAY_KEY_TTL_SECONDS = 3 * 86_400


class Paused(Exception):
    """No LLM call now: ``reason`` says why, ``retry_after`` when to look again (seconds)."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class BudgetState:
    """The day's usage against the budget, and why new calls are paused (if they are)."""

    day: str
    used: int
    limit: int  # 0 = no cap
    source: str  # "settings" or "live" (set with set_limit)
    resets_in_seconds: float

    @property
    def paused(self) -> bool:
        """True when new LLM calls wait for the next day (or a higher budget)."""
        return self.limit > 0 and self.used >= self.limit

    @property
    def reason(self) -> str:
        """Why new calls are paused, for ``status`` and logs ("" when they are not)."""
        if not self.paused:
            return ""
        hours = self.resets_in_seconds / 3_600
        return (f"daily token budget reached: {self.used:,} of {self.limit:,} tokens used on "
                f"{self.day} (UTC); new LLM calls resume at 00:00 UTC, in {hours:.1f} h, "
                "or when the budget is raised")


def usage_total(usage: Usage) -> int:
    """What one call costs against the budget: all four token counters summed."""
    return sum(int(getattr(usage, name)) for name in USAGE_FIELDS)


def day_of(now: float) -> str:
    """The UTC day ``now`` falls on, as ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def seconds_to_midnight(now: float) -> float:
    """Seconds from ``now`` to the next 00:00 UTC."""
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (today + timedelta(days=1)).timestamp() - now


def record(client: redis.Redis, usage: Usage, kind: str, now: float | None = None) -> int:
    """Count one call's ``usage`` under ``kind`` (episode, distill); returns the day's total."""
    key = keys.budget_used(day_of(time.time() if now is None else now))
    pipe = client.pipeline(transaction=False)
    pipe.incrby(key, usage_total(usage))
    pipe.expire(key, DAY_KEY_TTL_SECONDS)
    for name in USAGE_FIELDS:
        pipe.hincrby(keys.USAGE, f"{kind}:{name}", int(getattr(usage, name)))
    pipe.hincrby(keys.USAGE, f"{kind}:calls", 1)
    return int(pipe.execute()[0])


def state(client: redis.Redis, settings: Settings, now: float | None = None) -> BudgetState:
    """The day's usage and budget, in one round trip."""
    now = time.time() if now is None else now
    day = day_of(now)
    used, live = client.mget([keys.budget_used(day), keys.BUDGET_LIMIT])
    limit = int(live) if live is not None else settings.llm_daily_token_budget
    return BudgetState(day=day, used=int(used or 0), limit=limit,
                       source="live" if live is not None else "settings",
                       resets_in_seconds=seconds_to_midnight(now))


def check(client: redis.Redis, settings: Settings, now: float | None = None) -> None:
    """Raise ``Paused`` when the day's budget is used up."""
    _raise_if_paused(state(client, settings, now), settings)


def _raise_if_paused(current: BudgetState, settings: Settings) -> None:
    if current.paused:
        wait = min(settings.llm_pause_retry_seconds, current.resets_in_seconds + 1.0)
        raise Paused(current.reason, wait)


class Gate:
    """``check`` and ``record`` for one process, reading Redis at most every ``refresh``
    seconds while under budget (one round trip less per call at hundreds of calls a
    second). A pause therefore takes effect within ``refresh`` seconds fleet-wide, and at
    once in the process whose own call crossed the budget; a paused verdict is always
    confirmed from Redis, so raising the budget resumes calls at once."""

    def __init__(self, client: redis.Redis, settings: Settings, refresh: float = 1.0) -> None:
        self.client, self.settings, self.refresh = client, settings, refresh
        self._lock = threading.Lock()
        self._state: BudgetState | None = None
        self._read_at = -1e9

    def check(self) -> None:
        """Raise ``Paused`` when the day's budget is used up."""
        with self._lock:
            known, fresh = self._state, time.monotonic() - self._read_at < self.refresh
        if known is not None and fresh and not known.paused:
            return
        current = state(self.client, self.settings)
        with self._lock:
            self._state, self._read_at = current, time.monotonic()
        _raise_if_paused(current, self.settings)

    def record(self, usage: Usage, kind: str) -> int:
        """Count one call (see ``record``) and keep the day's new total."""
        used = record(self.client, usage, kind)
        with self._lock:
            if self._state is not None:
                self._state = replace(self._state, used=used)
        return used


def set_limit(client: redis.Redis, tokens: int | None) -> None:
    """Set the daily budget live for the whole fleet (0 = no cap); None reverts to settings."""
    if tokens is None:
        client.delete(keys.BUDGET_LIMIT)
        return
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ValueError(f"budget: expected a whole number of tokens >= 0, got {tokens!r}")
    client.set(keys.BUDGET_LIMIT, tokens)


def totals(client: redis.Redis) -> dict[str, dict[str, int]]:
    """Running usage per kind of call: ``{"episode": {"calls": n, "input_tokens": n, ...}}``."""
    out: dict[str, dict[str, int]] = {}
    for field, value in client.hgetall(keys.USAGE).items():
        text = field.decode() if isinstance(field, bytes) else str(field)
        kind, _, name = text.partition(":")
        out.setdefault(kind, {})[name] = int(value)
    return out
