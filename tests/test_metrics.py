"""GET /metrics: the service's figures from the state store, in Prometheus' format."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from ops.embedded import free_port
from ops.http import create_app
from ops.metrics import METRICS
from producer.api import Producer
from schemas.episode import Usage
from schemas.settings import Settings
from schemas.versions import Evaluation
from state import budget, deadletters, inbox, store, versions
from tests.factories import episode, failure
from worker import distill, reducer
from worker.reasoners.heuristic import HeuristicReasoner

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(http: TestClient, **headers: str) -> Samples:
    answer = http.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


@pytest.fixture
def service(settings: Settings, client: redis.Redis, private_broker: str) -> Settings:
    """Settings on a broker nobody consumes: what is enqueued stays queued and open."""
    return settings.model_copy(update={"broker_url": private_broker, "min_eval_cases": 1,
                                       "consensus_quorum": 100})


@pytest.fixture
def http(service: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(service)) as http:
        yield http


def test_metrics_report_the_state_store(http: TestClient, service: Settings,
                                        client: redis.Redis) -> None:
    empty = scrape(http)
    assert empty[("ripmap_episodes_merged_total", ())] == 0
    assert ("ripmap_params_best_version", ()) not in empty  # absent until evaluated
    assert ("ripmap_last_distillation_age_seconds", ()) not in empty

    for i in range(3):
        reducer.merge(client, episode(i), service)
    reducer.merge(client, episode(3, status="unparsable"), service)
    versions.record_evaluation(client, Evaluation(version=0, mean_ndcg=0.42, cases=30),
                               "eval-1", service)
    distill.distill(client, service, HeuristicReasoner())
    deadletters.add(client, "ripmap.reason_episode", {"failures": []}, "invalid payload")
    budget.record(client, Usage(input_tokens=100, output_tokens=20,
                                cache_read_input_tokens=5), "episode")
    budget.record(client, Usage(input_tokens=7, output_tokens=3), "episode")
    budget.record(client, Usage(input_tokens=50, output_tokens=40), "distill")
    budget.set_limit(client, 1_000)
    inbox.put(client, episode(9))
    Producer(service).enqueue([failure(i) for i in range(5)])  # one batch, queued, open

    got = scrape(http)
    summary = store.summary(client, 1)
    best = versions.best_number(client)
    assert best == 0
    wisdom = store.latest_wisdom(client)
    assert wisdom is not None
    expected = {
        "ripmap_episodes_merged_total": 4,
        "ripmap_episodes_unparsable_total": 1,
        "ripmap_proposals_total": summary.proposals,
        "ripmap_episodes_awaiting_merge": 1,
        "ripmap_episodes_pending_distill": summary.pending_distill,
        "ripmap_open_batches": 1,
        "ripmap_batches_resent_total": 0,
        "ripmap_dead_letters": 1,
        "ripmap_budget_used_tokens": 125 + 10 + 90,
        "ripmap_budget_limit_tokens": 1_000,
        "ripmap_budget_paused": 0,
        "ripmap_params_current_version": versions.current_number(client),
        "ripmap_params_best_version": 0,
        "ripmap_params_best_cases": 30,
        "ripmap_params_best_ndcg": 0.42,
        "ripmap_wisdom_version": wisdom.version,
        "ripmap_last_distillation_timestamp_seconds": wisdom.created_at,
    }
    assert {name: got[(name, ())] for name in expected} == pytest.approx(expected)
    assert summary.proposals > 0 and wisdom.version >= 1
    age = got[("ripmap_last_distillation_age_seconds", ())]
    assert 0 <= age < time.time() - wisdom.created_at + 1
    assert got[("ripmap_queue_messages", (("queue", "episodes"),))] == 1
    assert got[("ripmap_queue_messages", (("queue", "merge"),))] == 0
    tokens = {labels: v for (name, labels), v in got.items() if name == "ripmap_llm_tokens_total"}
    assert tokens[(("kind", "episode"), ("type", "input_tokens"))] == 107
    assert tokens[(("kind", "episode"), ("type", "cache_read_input_tokens"))] == 5
    assert tokens[(("kind", "distill"), ("type", "output_tokens"))] == 40
    assert got[("ripmap_llm_calls_total", (("kind", "episode"),))] == 2
    assert got[("ripmap_llm_calls_total", (("kind", "distill"),))] == 1

    # the budget spent: paused
    budget.set_limit(client, 100)
    assert scrape(http)[("ripmap_budget_paused", ())] == 1


def test_metrics_speak_openmetrics_when_asked(http: TestClient) -> None:
    answer = http.get("/metrics", headers={"accept": "application/openmetrics-text"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.endswith("# EOF\n")


def test_metrics_take_the_api_token_when_one_is_set(service: Settings) -> None:
    secured = service.model_copy(update={"api_token": SecretStr("scrape-token")})
    with TestClient(create_app(secured)) as http:
        assert http.get("/metrics").status_code == 401
        wrong = http.get("/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert scrape(http, authorization="Bearer scrape-token")[
            ("ripmap_episodes_merged_total", ())] == 0


def test_metrics_answer_503_when_the_state_store_is_down(service: Settings) -> None:
    down = service.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with TestClient(create_app(down)) as http:
        answer = http.get("/metrics")
    assert answer.status_code == 503 and "unavailable" in answer.text


def test_every_metric_is_in_the_readme() -> None:
    assert [name for name in METRICS if f"`{name}`" not in README] == []
