"""The daily token budget: counted in Redis, pauses new LLM calls, resumes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis

from producer.api import Producer
from schemas.episode import Usage
from schemas.settings import Settings
from state import budget, deadletters, keys, store
from tests.factories import failure
from tests.fake_anthropic import FakeAnthropic, reasoner_env
from tests.services import Worker, wait_until, worker_env

NOON = datetime(2031, 5, 17, 12, 0, tzinfo=UTC).timestamp()
CALL = Usage(input_tokens=100, output_tokens=50, cache_creation_input_tokens=30,
             cache_read_input_tokens=20, model="m")


def test_usage_is_counted_per_day_and_per_kind(settings: Settings, client: redis.Redis) -> None:
    assert budget.record(client, CALL, "episode", now=NOON) == 200
    assert budget.record(client, CALL, "episode", now=NOON + 60) == 400
    budget.record(client, CALL, "distill", now=NOON)
    assert budget.state(client, settings, now=NOON).used == 600
    assert budget.state(client, settings, now=NOON + 86_400).used == 0  # a new UTC day
    totals = budget.totals(client)
    assert totals["episode"] == {"calls": 2, "input_tokens": 200, "output_tokens": 100,
                                 "cache_creation_input_tokens": 60, "cache_read_input_tokens": 40}
    assert totals["distill"]["calls"] == 1
    assert client.ttl(keys.budget_used("2031-05-17")) > 86_400  # old days expire


def test_reaching_the_budget_pauses_with_a_reason_until_the_next_day(
    settings: Settings, client: redis.Redis
) -> None:
    capped = settings.model_copy(update={"llm_daily_token_budget": 400,
                                         "llm_pause_retry_seconds": 30})
    budget.record(client, CALL, "episode", now=NOON)
    budget.check(client, capped, now=NOON)  # 200 of 400: calls go on
    budget.record(client, CALL, "episode", now=NOON)
    state = budget.state(client, capped, now=NOON)
    assert state.paused and state.source == "settings"
    assert "400 of 400 tokens" in state.reason and "12.0 h" in state.reason
    with pytest.raises(budget.Paused) as paused:
        budget.check(client, capped, now=NOON)
    assert paused.value.retry_after == 30
    just_before_midnight = NOON + 12 * 3_600 - 2
    with pytest.raises(budget.Paused) as paused:
        budget.check(client, capped, now=just_before_midnight)
    assert paused.value.retry_after == pytest.approx(3.0)  # look again right after 00:00 UTC
    budget.check(client, capped, now=NOON + 86_400)  # the next day: calls resume


def test_the_budget_can_be_set_live_and_reverted(settings: Settings, client: redis.Redis) -> None:
    budget.record(client, CALL, "episode", now=NOON)
    budget.set_limit(client, 100)
    assert budget.state(client, settings, now=NOON).paused
    assert budget.state(client, settings, now=NOON).source == "live"
    budget.set_limit(client, 0)  # 0 = no cap
    budget.check(client, settings, now=NOON)
    budget.set_limit(client, None)
    assert budget.state(client, settings, now=NOON).source == "settings"
    for bad in (-1, 1.5, True, "100"):
        with pytest.raises(ValueError, match="budget"):
            budget.set_limit(client, bad)  # type: ignore[arg-type]


def test_a_process_gate_pauses_on_its_own_crossing_at_once_and_resumes_at_once(
    settings: Settings, client: redis.Redis
) -> None:
    budget.set_limit(client, 500)
    gate = budget.Gate(client, settings, refresh=3_600)
    gate.check()
    for _ in range(3):
        budget.record(client, CALL, "episode")  # other processes spend 600 of 500
    gate.check()  # within its refresh period the gate trusts what it read (the trade-off)
    gate.record(CALL, "episode")  # this process's own call: it learns the day's total
    with pytest.raises(budget.Paused, match="800 of 500"):
        gate.check()
    budget.set_limit(client, 10_000)
    gate.check()  # a paused verdict is always re-read: raising the budget resumes at once
    budget.set_limit(client, 1)
    with pytest.raises(budget.Paused):
        budget.Gate(client, settings, refresh=0).check()  # refresh 0 reads every time



def test_a_worker_pauses_at_the_budget_and_resumes_when_it_is_raised(
    client: redis.Redis, settings: Settings, redis_url: str, private_broker: str
) -> None:
    with FakeAnthropic() as fake:
        # one thread: calls are sequential, so the first call that crosses the budget is
        # the last one made; every call costs well over 1,000 tokens
        env = worker_env(redis_url, **reasoner_env(
            fake.base_url, RIPMAP_BROKER_URL=private_broker, RIPMAP_BATCH_SIZE="1",
            RIPMAP_LLM_DAILY_TOKEN_BUDGET="1000", RIPMAP_LLM_PAUSE_RETRY_SECONDS="0.2"))
        worker = Worker(env, concurrency=1, name="budget").wait_ready()
        try:
            producer = Producer(settings.model_copy(update={"broker_url": private_broker,
                                                            "batch_size": 1}))
            ids = [producer.enqueue([failure(i)])[0].batch_id for i in range(5)]
            # paused batches are taken, found paused, and put back: wait for several rounds
            wait_until(lambda: worker.log.read_text().count("'status': 'paused'") >= 6, 60,
                       "paused rounds")
            assert fake.stats()["requests"] == 1
            assert sum(store.merged_flags(client, ids)) == 1
            state = budget.state(client, settings.model_copy(
                update={"llm_daily_token_budget": 1000}))
            assert state.paused and "daily token budget reached" in state.reason
            assert deadletters.count(client) == 0  # waiting, not failing

            budget.set_limit(client, 1_000_000)
            wait_until(lambda: all(store.merged_flags(client, ids)), 60, "all merged")
        finally:
            worker.kill()
        assert fake.stats()["requests"] == 5
        assert deadletters.count(client) == 0
        assert budget.totals(client)["episode"]["calls"] == 5
