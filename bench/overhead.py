"""Benchmark 1: episodes/s end to end against a bare Celery two-task chain, same run.

Service: ``Producer.enqueue`` -> ``reason_episode`` (heuristic reasoner) -> the reducer
(its inbox, drained by ``merge_pending``), counted done by the scratchpad's ``episodes``
stat. Baseline: ``chain(A, B)`` of no-op tasks carrying the same batch payload, counted done
by B's INCR. Same broker, same Celery
configuration, same pool and concurrency, one worker process each; runs interleave so the
shared machine's noise falls on both. Besides the rate, each run records CPU per episode of
the worker process, the redis-server and the enqueuing process: CPU is far less sensitive
than wall time to what else runs on the machine, and says where the time goes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery, chain

from bench import bare
from bench.common import (
    BenchWorker,
    Options,
    env_for,
    failure_records,
    loadavg,
    private_redis,
    process_cpu,
    redis_cpu,
    running,
    settings_for,
    stat,
    state_client,
    table,
    wait_count,
)
from producer.api import Producer
from schemas.failures import FailureBatch, RankingFailure
from state import deadletters, keys

CONCURRENCY = 8
POOL = "threads"
VARIANTS = {  # baseline prefix -> task events on?
    "bare": True,
    "bare_noevents": False,
}
LABELS = {"service": "service: enqueue → reason_episode (heuristic) → reducer (inbox drain)",
          "bare": "bare Celery chain A → B, same config (task events on)",
          "bare_noevents": "bare Celery chain A → B, task events off"}


@dataclass(frozen=True)
class Run:
    """One timed run: rates, and CPU milliseconds per episode by process."""

    rate: float  # episodes (chains) per second, first enqueue to last merge
    enqueue_rate: float  # of the enqueuing call alone
    worker_ms: float
    redis_ms: float
    client_ms: float


@dataclass(frozen=True)
class Pipeline:
    """How to enqueue ``n`` episodes and wait for them, on one worker."""

    worker: BenchWorker
    enqueue: Callable[[int, str], None]
    done: Callable[[], Any]


def run(opts: Options) -> str:
    """Measure and return the markdown section."""
    n, runs = (150, 3) if opts.quick else (400, 5)
    load_before = loadavg()
    with private_redis() as url:
        env = env_for(url)
        started = [BenchWorker(env, queues="episodes,merge", pool=POOL, concurrency=CONCURRENCY,
                               name="service")]
        started += [BenchWorker({**env, "RIPMAP_BENCH_BARE_PREFIX": prefix,
                                 "RIPMAP_BENCH_TASK_EVENTS": "1" if events else "0"},
                                app="bench.bare_app", queues=",".join(bare.queues(prefix)),
                                pool=POOL, concurrency=CONCURRENCY, name=prefix)
                    for prefix, events in VARIANTS.items()]
        with running(*started):
            results = _measure(url, n, runs, started)
    return _report(opts, results, n, runs, load_before)


def _measure(url: str, n: int, runs: int, started: list[BenchWorker]) -> dict[str, list[Run]]:
    settings = settings_for(url)
    client = state_client(url)
    producer = Producer(settings)
    sender = Celery("ripmap_bench_sender", broker=settings.broker)
    sender.conf.update(task_serializer="json", accept_content=["json"])
    pipelines = {
        "service": Pipeline(started[0], functools.partial(_enqueue_service, producer),
                            lambda: client.hget(keys.STATS, "episodes")),
        **{p: Pipeline(w, functools.partial(_enqueue_bare, sender, p),
                       functools.partial(client.get, bare.done_key(p)))
           for p, w in zip(VARIANTS, started[1:], strict=True)},
    }
    results: dict[str, list[Run]] = {name: [] for name in pipelines}
    try:
        for name, pipeline in pipelines.items():  # warm-up: connections, scripts, imports
            _timed(client, pipeline, 50, f"warm-{name}")
        order = list(pipelines)
        for r in range(runs):
            for name in order[r % len(order):] + order[: r % len(order)]:
                results[name].append(_timed(client, pipelines[name], n, f"run{r}-{name}"))
        if deadletters.count(client):
            raise RuntimeError(f"{deadletters.count(client)} dead letters during the benchmark")
    finally:
        producer.close()
        sender.close()
        client.close()
    return results


def _timed(client: redis.Redis, pipeline: Pipeline, n: int, tag: str) -> Run:
    client.flushdb()
    pid = pipeline.worker.proc.pid
    cpu0, redis0, own0 = process_cpu(pid), redis_cpu(client), time.process_time()
    t0 = time.perf_counter()
    pipeline.enqueue(n, tag)
    t_enqueue = time.perf_counter() - t0
    wait_count(pipeline.done, n, tag, pipeline.worker.check)
    elapsed = time.perf_counter() - t0
    return Run(rate=n / elapsed, enqueue_rate=n / t_enqueue,
               worker_ms=(process_cpu(pid) - cpu0) * 1000 / n,
               redis_ms=(redis_cpu(client) - redis0) * 1000 / n,
               client_ms=(time.process_time() - own0) * 1000 / n)


def _batches(n: int, tag: str, size: int = 5) -> list[list[dict[str, Any]]]:
    records = failure_records(n * size, tag)
    return [records[i : i + size] for i in range(0, len(records), size)]


def _enqueue_service(producer: Producer, n: int, tag: str) -> None:
    records = [r for batch in _batches(n, tag, producer.settings.batch_size) for r in batch]
    enqueued = producer.enqueue(records)
    if len(enqueued) != n or not all(e.new for e in enqueued):
        raise RuntimeError(f"expected {n} new batches, got {len(enqueued)}")


def _enqueue_bare(sender: Celery, prefix: str, n: int, tag: str) -> None:
    queue_a, queue_b = bare.queues(prefix)
    # the same message body an episode carries, validated while enqueuing as the producer does
    for batch in _batches(n, tag):
        payload = FailureBatch(failures=[RankingFailure.model_validate(r) for r in batch])
        chain(sender.signature(bare.TASK_A, args=[payload.model_dump(mode="json")],
                               queue=queue_a),
              sender.signature(bare.TASK_B, queue=queue_b)).apply_async()


def _report(opts: Options, results: dict[str, list[Run]], n: int, runs: int,
            load_before: str) -> str:
    service = results["service"]
    rows, cpu_rows = [], []
    for name, values in results.items():
        ratios = [s.rate / b.rate for s, b in zip(service, values, strict=True)]
        rows.append([LABELS[name], stat([v.rate for v in values]).fmt(0),
                     "—" if name == "service" else stat(ratios).fmt_ratio(),
                     stat([v.enqueue_rate for v in values]).fmt(0)])
        cpu_rows.append([LABELS[name]] + [stat([getattr(v, f) for v in values]).fmt(2)
                                          for f in ("worker_ms", "redis_ms", "client_ms")])
    return "\n\n".join([
        "## 1. Overhead ratio: service vs bare Celery chain",
        f"Command: `{opts.command}`",
        f"One worker process per pipeline, `-P {POOL} -c {CONCURRENCY}`, both of its queues; "
        f"{n} episodes (batches of 5 failures) per run, {runs} interleaved runs after a "
        f"50-episode warm-up; timed from the first enqueue to the last merge (or B). "
        f"Load average before: {load_before}, after: {loadavg()}.",
        table(["pipeline", "episodes/s, median (min–max)",
               "service ÷ this, median of per-run ratios (min–max)",
               "enqueue call alone, per s"], rows),
        "CPU milliseconds per episode (median, min–max), from /proc and Redis INFO cpu:",
        table(["pipeline", "worker process", "redis-server", "enqueuing process"], cpu_rows),
        "Target: service ≥ 0.8 × the bare chain.",
    ])
