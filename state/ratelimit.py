"""One Anthropic API rate limit for the whole fleet: requests and tokens per window, in Redis.

Every worker process reserves through the same two moving windows of the ``limits``
library (its Redis storage: one atomic Lua call per reservation), so the fleet as a whole
never sends more than ``llm_requests_per_minute`` requests or ``llm_tokens_per_minute``
tokens in any ``llm_rate_window_seconds`` span. A caller that finds a window full sleeps
until its oldest entry expires and tries again: episodes wait, they are never dropped. If
the wait would outlast the caller's deadline, ``Paused`` is raised and the task is
re-queued instead (a Celery task must finish well within the broker's visibility timeout).

Tokens are counted as Anthropic's limits count them: input (uncached) + cache creation +
output; cache reads are free. A call reserves an estimate before it is sent (its uncached
prompt at 3 characters per token, plus ``llm_expected_output_tokens``); if the API then
reports more, the excess is carried as debt and reserved by this process's next call, so
the windows reflect real usage. Tokens are reserved in units of 1/1000 of the window's
limit but at most 100 tokens (a moving window keeps one list entry per unit: 5,000 entries
for 500,000 tokens a minute), so rounding never adds more than 100 tokens to a call.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from schemas.episode import Usage
from schemas.settings import Settings
from state import keys, store
from state.budget import Paused

TOKEN_SLOTS = 1_000
MAX_TOKEN_UNIT = 100  # a call's reservation is rounded up by less than this many tokens
CHARS_PER_TOKEN = 3.0  # deliberately low: an estimate should err towards reserving more


@dataclass(frozen=True)
class RateState:
    """How full the fleet's windows are right now (limits of 0 mean unlimited)."""

    window_seconds: int
    requests_used: int
    requests_limit: int
    tokens_used: int
    tokens_limit: int


def billed_tokens(usage: Usage) -> int:
    """What a call counts against the token rate: input + cache creation + output."""
    return usage.input_tokens + usage.cache_creation_input_tokens + usage.output_tokens


def estimate_tokens(prompt_chars: int, expected_output: int) -> int:
    """A call's tokens before it is made: the uncached prompt plus the expected answer."""
    return math.ceil(prompt_chars / CHARS_PER_TOKEN) + expected_output


class FleetRateLimit:
    """Requests and tokens per window, shared by every process through Redis."""

    def __init__(self, settings: Settings, url: str | None = None) -> None:
        self.window = settings.llm_rate_window_seconds
        url = url or settings.state_url
        # store.connect's blocking pool: hundreds of threads may reserve at once (redis-py's
        # default pool fails beyond 100 connections instead of waiting for one), and the
        # same TLS and Sentinel handling as every other state-store client; undecoded, as
        # `limits` expects
        pool = store.connect(url, max_connections=64, decode=False).connection_pool
        storage = RedisStorage(url, connection_pool=pool, key_prefix=keys.LIMITER_PREFIX)
        self._limiter = MovingWindowRateLimiter(storage)
        rpm, tpm = settings.llm_requests_per_minute, settings.llm_tokens_per_minute
        self._requests = RateLimitItemPerSecond(rpm, self.window) if rpm else None
        self._unit = max(1, min(tpm // TOKEN_SLOTS, MAX_TOKEN_UNIT))
        self._tokens = RateLimitItemPerSecond(tpm // self._unit, self.window) if tpm else None
        self._debt = 0
        self._lock = threading.Lock()

    def acquire(self, tokens: int, deadline: float) -> float:
        """Reserve one request and ``tokens`` (plus any debt), waiting as long as needed but
        not past ``deadline`` (``time.monotonic()``); returns the seconds waited.

        Raises ``Paused`` when the deadline would pass first (nothing is reserved then).
        """
        debt = self._take_debt()
        start = time.monotonic()
        try:
            self._wait(self._tokens, keys.RATE_TOKENS, self._units(tokens + debt), deadline)
        except Paused:
            self.add_debt(debt)
            raise
        self._wait(self._requests, keys.RATE_REQUESTS, 1, deadline)
        return time.monotonic() - start

    def settle(self, reserved: int, usage: Usage) -> None:
        """After a call: usage beyond what was reserved becomes debt for the next call."""
        extra = billed_tokens(usage) - reserved
        if extra > 0:
            self.add_debt(extra)

    def add_debt(self, tokens: int) -> None:
        """Tokens used but not yet reserved; the next ``acquire`` in this process adds them."""
        with self._lock:
            self._debt += tokens

    def state(self) -> RateState:
        """How many requests and tokens the current window holds, fleet-wide."""
        requests_used = self._used(self._requests, keys.RATE_REQUESTS)
        token_units = self._used(self._tokens, keys.RATE_TOKENS)
        return RateState(
            window_seconds=self.window,
            requests_used=requests_used,
            requests_limit=self._requests.amount if self._requests else 0,
            tokens_used=token_units * self._unit,
            tokens_limit=self._tokens.amount * self._unit if self._tokens else 0,
        )

    def _take_debt(self) -> int:
        with self._lock:
            debt, self._debt = self._debt, 0
        return debt

    def _units(self, tokens: int) -> int:
        return max(1, math.ceil(tokens / self._unit))

    def _wait(self, item: RateLimitItem | None, name: str, cost: int, deadline: float) -> None:
        if item is None:
            return
        cost = min(cost, item.amount)  # a call bigger than the window still goes, alone
        while not self._limiter.hit(item, name, cost=cost):
            reset, _ = self._limiter.get_window_stats(item, name)
            # sleep until the oldest entry leaves the window; the jitter spreads the waiters
            delay = min(max(reset - time.time(), 0.0), self.window) + random.uniform(0.005, 0.05)
            if time.monotonic() + delay > deadline:
                what = "requests" if name == keys.RATE_REQUESTS else "tokens"
                raise Paused(f"fleet rate limit on {what} is full for longer than this "
                             f"episode may wait ({item.amount} per {self.window}s)", delay)
            time.sleep(delay)

    def _used(self, item: RateLimitItem | None, name: str) -> int:
        if item is None:
            return 0
        _, remaining = self._limiter.get_window_stats(item, name)
        return max(0, item.amount - remaining)
