"""The fleet-wide rate limit: requests and tokens per window, shared through Redis."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from pydantic import SecretStr

from producer.api import Producer
from schemas.episode import Usage
from schemas.failures import RankingFailure
from schemas.params import ParameterPoint
from schemas.settings import Settings
from state import budget, keys, store
from state.ratelimit import FleetRateLimit, billed_tokens
from tests.factories import failure
from tests.fake_anthropic import FakeAnthropic, reasoner_env
from tests.services import Worker, wait_until, worker_env
from worker.reasoners.anthropic_api import AnthropicReasoner
from worker.reasoners.base import EpisodeRequest


def limited(settings: Settings, **limits: int) -> FleetRateLimit:
    return FleetRateLimit(settings.model_copy(update=limits))


def test_a_full_window_makes_callers_wait_or_pause_but_never_overbooks(
    settings: Settings, client: redis.Redis
) -> None:
    limit = limited(settings, llm_requests_per_minute=3, llm_tokens_per_minute=0,
                    llm_rate_window_seconds=60)
    soon = time.monotonic() + 0.2
    for _ in range(3):
        limit.acquire(100, soon)
    with pytest.raises(budget.Paused, match="rate limit on requests") as paused:
        limit.acquire(100, soon)  # the window frees in ~60 s: longer than this caller may wait
    assert 0 < paused.value.retry_after <= 60.1
    assert limit.state().requests_used == 3


def test_a_caller_waits_for_the_window_to_move(settings: Settings, client: redis.Redis) -> None:
    limit = limited(settings, llm_requests_per_minute=2, llm_tokens_per_minute=0,
                    llm_rate_window_seconds=1)
    deadline = time.monotonic() + 10
    waits = [limit.acquire(1, deadline) for _ in range(3)]
    assert waits[0] == pytest.approx(0, abs=0.5) and waits[2] > 0  # the third had to wait


def test_tokens_are_reserved_in_units_and_a_paused_reservation_is_given_back(
    settings: Settings, client: redis.Redis
) -> None:
    limit = limited(settings, llm_requests_per_minute=1, llm_tokens_per_minute=10_000,
                    llm_rate_window_seconds=60)
    limit.acquire(2_500, time.monotonic() + 1)
    assert limit.state().tokens_used == 2_500 and limit.state().tokens_limit == 10_000
    limit.add_debt(1_000)
    with pytest.raises(budget.Paused):  # the request window is full
        limit.acquire(100, time.monotonic() + 0.1)
    state = limit.state()
    # tokens were taken before the request slot was refused: conservative, never under
    assert state.tokens_used == 2_500 + 1_100 and state.requests_used == 1


def test_usage_beyond_the_reservation_is_charged_to_the_next_call(
    settings: Settings, client: redis.Redis
) -> None:
    limit = limited(settings, llm_requests_per_minute=0, llm_tokens_per_minute=1_000)
    limit.acquire(100, time.monotonic() + 1)
    used = Usage(input_tokens=300, cache_creation_input_tokens=200, cache_read_input_tokens=999,
                 output_tokens=100)
    assert billed_tokens(used) == 600  # cache reads are not billed against the rate
    limit.settle(100, used)
    limit.acquire(50, time.monotonic() + 1)
    assert limit.state().tokens_used == 100 + 500 + 50


def test_unlimited_touches_nothing(settings: Settings, client: redis.Redis) -> None:
    limit = limited(settings, llm_requests_per_minute=0, llm_tokens_per_minute=0)
    for _ in range(50):
        limit.acquire(10**6, time.monotonic())
    assert limit.state().requests_limit == 0
    assert not list(client.scan_iter(keys.LIMITER_PREFIX + "*"))


def test_threads_never_exceed_the_token_rate_at_the_server(
    settings: Settings, client: redis.Redis
) -> None:
    # 6 threads, 12 episodes, about 4 episodes' worth of tokens per 1 s window (the first
    # call, writing the prompt cache, costs about 2,200 tokens).
    window, tokens = 1, 3_000
    with FakeAnthropic() as fake:
        s = settings.model_copy(update={
            "anthropic_api_key": SecretStr("sk-ant-fake"), "anthropic_base_url": fake.base_url,
            "llm_requests_per_minute": 0, "llm_tokens_per_minute": tokens,
            "llm_rate_window_seconds": window, "llm_expected_output_tokens": 300})
        reasoner = AnthropicReasoner(s)

        def one(i: int) -> bool:
            batch = [RankingFailure.model_validate(failure(i))]
            req = EpisodeRequest(failures=batch, params=ParameterPoint(), signatures={})
            return reasoner.reason(req).answer is not None

        with ThreadPoolExecutor(6) as pool:
            assert all(pool.map(one, range(12)))
        records = fake.records()
        assert len(records) == 12
        assert sum(r.billed_tokens for r in records) > 2 * tokens  # the limit had to bind
        # 0.5 s of slack for the time between reserving and arriving at the server
        assert fake.max_in_window(window - 0.5, tokens=True) <= tokens


# -- two worker processes, one limit -------------------------------------------------------



def test_two_workers_share_one_request_limit(
    client: redis.Redis, settings: Settings, redis_url: str, private_broker: str
) -> None:
    window, per_window, batches = 3, 4, 16
    keys_by_worker = {name: f"sk-ant-{name}-{uuid.uuid4().hex[:8]}" for name in ("a", "b")}
    with FakeAnthropic(latency=0.05) as fake:
        workers = [Worker(worker_env(redis_url, **reasoner_env(
            fake.base_url, key, RIPMAP_BROKER_URL=private_broker, RIPMAP_BATCH_SIZE="1",
            RIPMAP_LLM_REQUESTS_PER_MINUTE=str(per_window), RIPMAP_LLM_TOKENS_PER_MINUTE="0",
            RIPMAP_LLM_RATE_WINDOW_SECONDS=str(window))), concurrency=4, name=f"rate-{name}")
            for name, key in keys_by_worker.items()]
        try:
            for w in workers:
                w.wait_ready()
            producer = Producer(settings.model_copy(update={"broker_url": private_broker,
                                                            "batch_size": 1}))
            ids = [producer.enqueue([failure(i)])[0].batch_id for i in range(batches)]
            wait_until(lambda: all(store.merged_flags(client, ids)), 90, "all batches merged")
        finally:
            for w in workers:
                w.kill()
        records = fake.records()
    assert len(records) == batches
    by_key = {k: sum(r.api_key == k for r in records) for k in keys_by_worker.values()}
    assert all(n > 0 for n in by_key.values()), by_key  # both processes called the API
    # Never more than the limit at the server within a window (less 1 s of slack for the
    # time between reserving in a worker and arriving at the server).
    assert fake.max_in_window(window - 1.0) <= per_window
