"""Prometheus metrics: the service's own figures, read from the state store at scrape time.

``GET /metrics`` on the HTTP API (ops/http.py) renders a registry holding one
``ServiceCollector``: nothing is counted in the API process; every scrape reads what
``ops.monitor.operations`` (queues, backlog, dead letters, tokens, budget),
``state.store.summary`` (episodes, wisdom), ``state.versions`` (current and best version,
best NDCG) and ``state.budget.totals`` (tokens per kind of call) give, so every API
replica reports the same fleet-wide numbers. The names are listed in ``METRICS`` and in the
README's table.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from ops import monitor
from schemas.settings import Settings
from state import budget, store, versions

# name (as exposed) -> help; counters end in _total
METRICS: dict[str, str] = {
    "ripmap_episodes_merged_total": "Episodes merged into the scratchpad.",
    "ripmap_episodes_unparsable_total": "Episodes whose reasoner answer could not be parsed.",
    "ripmap_proposals_total": "Valid proposals merged.",
    "ripmap_proposals_dropped_total": "Proposals dropped as invalid.",
    "ripmap_episodes_per_minute": "Episodes merged per minute over the last 10 minutes.",
    "ripmap_episodes_awaiting_merge": "Reasoned episodes waiting in the reducer's inbox.",
    "ripmap_episodes_pending_distill": "Merged episodes not yet distilled.",
    "ripmap_open_batches": "Batches sent and not yet merged or dead-lettered.",
    "ripmap_batches_resent_total": "Batches the broker lost that the sweep sent again.",
    "ripmap_dead_letters": "Dead letters waiting (ripmap-optimizer dlq).",
    "ripmap_queue_messages": "Messages waiting on a broker queue, by queue.",
    "ripmap_llm_tokens_total": "LLM tokens used, by kind of call and token type.",
    "ripmap_llm_calls_total": "LLM calls made, by kind of call.",
    "ripmap_budget_used_tokens": "Tokens counted against today's budget (UTC day).",
    "ripmap_budget_limit_tokens": "The daily token budget (0: no cap).",
    "ripmap_budget_paused": "1 while new LLM calls are paused by the budget.",
    "ripmap_params_current_version": "The current parameter version.",
    "ripmap_params_best_version": "The best evaluated version (absent until one has enough cases).",
    "ripmap_params_best_ndcg": "Mean NDCG reported for the best version.",
    "ripmap_params_best_cases": "Evaluation cases behind the best version's NDCG.",
    "ripmap_params_pending_votes": "Votes waiting for the next consensus step.",
    "ripmap_wisdom_version": "The latest distillation's version (0 before the first).",
    "ripmap_last_distillation_timestamp_seconds": "When the latest distillation was made.",
    "ripmap_last_distillation_age_seconds": "Seconds since the latest distillation.",
}


class ServiceCollector(Collector):
    """Reads the service's figures from the state store (and the broker's queue depths)
    each time it is collected."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    def collect(self) -> Iterable[Metric]:
        return list(self._metrics(time.time()))

    def _metrics(self, now: float) -> Iterator[Metric]:
        ops = monitor.operations(self.client, self.settings)
        summary = store.summary(self.client, 1)
        wisdom = store.latest_wisdom(self.client)
        current, best = versions.current_number(self.client), versions.best_number(self.client)

        yield _counter("ripmap_episodes_merged_total", ops.episodes)
        yield _counter("ripmap_episodes_unparsable_total", summary.unparsable)
        yield _counter("ripmap_proposals_total", summary.proposals)
        yield _counter("ripmap_proposals_dropped_total", summary.dropped_proposals)
        yield _gauge("ripmap_episodes_per_minute", ops.episodes_per_minute)
        yield _gauge("ripmap_episodes_awaiting_merge", ops.awaiting_merge)
        yield _gauge("ripmap_episodes_pending_distill", summary.pending_distill)
        yield _gauge("ripmap_open_batches", ops.open_batches)
        yield _counter("ripmap_batches_resent_total", ops.resent_by_ledger)
        yield _gauge("ripmap_dead_letters", ops.dead_letters)

        queues = _family(GaugeMetricFamily, "ripmap_queue_messages", ["queue"])
        for queue, depth in sorted(ops.queues.items()):
            queues.add_metric([queue], depth)
        yield queues

        tokens = _family(CounterMetricFamily, "ripmap_llm_tokens_total", ["kind", "type"])
        calls = _family(CounterMetricFamily, "ripmap_llm_calls_total", ["kind"])
        for kind, per_kind in sorted(budget.totals(self.client).items()):
            for name, n in sorted(per_kind.items()):
                if name == "calls":
                    calls.add_metric([kind], n)
                else:
                    tokens.add_metric([kind, name], n)
        yield tokens
        yield calls

        yield _gauge("ripmap_budget_used_tokens", ops.budget_used_today)
        yield _gauge("ripmap_budget_limit_tokens", ops.budget_limit)
        yield _gauge("ripmap_budget_paused", 1 if ops.budget_paused_reason else 0)

        yield _gauge("ripmap_params_current_version", current)
        yield _gauge("ripmap_params_pending_votes", versions.pending_votes(self.client))
        if best is not None:  # absent, not zero, until a version has enough cases
            score = versions.score(self.client, best)
            yield _gauge("ripmap_params_best_version", best)
            yield _gauge("ripmap_params_best_cases", score.cases)
            if score.mean_ndcg is not None:
                yield _gauge("ripmap_params_best_ndcg", score.mean_ndcg)

        yield _gauge("ripmap_wisdom_version", summary.wisdom_version)
        if wisdom is not None:
            yield _gauge("ripmap_last_distillation_timestamp_seconds", wisdom.created_at)
            yield _gauge("ripmap_last_distillation_age_seconds",
                         max(0.0, now - wisdom.created_at))


def render(client: redis.Redis, settings: Settings, accept: str = "") -> tuple[bytes, str]:
    """One scrape: the exposition (Prometheus text, or OpenMetrics if ``accept`` asks for
    it) and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(client, settings))
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


def _family(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily], name: str, labels: list[str]
) -> CounterMetricFamily | GaugeMetricFamily:
    base = name.removesuffix("_total") if kind is CounterMetricFamily else name
    return kind(base, METRICS[name], labels=labels)


def _counter(name: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name.removesuffix("_total"), METRICS[name], value=value)


def _gauge(name: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, METRICS[name], value=value)
