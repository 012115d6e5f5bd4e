"""Benchmark 1: episodes/s end to end against a bare Celery two-task chain, same run.

Service: ``Producer.enqueue`` -> ``reason_episode`` (heuristic reasoner) -> ``merge_insights``,
counted done by the scratchpad's ``episodes`` stat. Baseline: ``chain(A, B)`` of no-op tasks
carrying the same batch payload, counted done by B's INCR. Same broker, same Celery
configuration, same pool and concurrency, one worker process each; runs interleave so the
shared machine's noise falls on both.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
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
    running,
    settings_for,
    stat,
    state_client,
    table,
)
from producer.api import Producer
from schemas.failures import FailureBatch, RankingFailure
from worker import deadletters, keys

CONCURRENCY = 8
POOL = "threads"
VARIANTS = {  # baseline prefix -> task events on?
    "bare": True,
    "bare_noevents": False,
}


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
            results = _measure(url, settings_for(url), n, runs)
    return _report(opts, results, n, runs, load_before)


def _measure(url: str, settings: Any, n: int, runs: int) -> dict[str, list[float]]:
    client = state_client(url)
    producer = Producer(settings)
    sender = Celery("ripmap_bench_sender", broker=settings.broker)
    sender.conf.update(task_serializer="json", accept_content=["json"])
    timers: dict[str, Callable[[int, str], float]] = {
        "service": lambda k, tag: _time_service(client, producer, k, tag),
        **{p: functools.partial(_time_bare, client, sender, p) for p in VARIANTS},
    }
    results: dict[str, list[float]] = {name: [] for name in timers}
    try:
        for name, timer in timers.items():  # warm-up: connections, script cache, imports
            timer(50, f"warm-{name}")
        order = list(timers)
        for r in range(runs):
            for name in order[r % len(order):] + order[: r % len(order)]:
                results[name].append(timer_run(timers[name], n, f"run{r}-{name}"))
        if deadletters.count(client):
            raise RuntimeError(f"{deadletters.count(client)} dead letters during the benchmark")
    finally:
        producer.close()
        sender.close()
        client.close()
    return results


def timer_run(timer: Callable[[int, str], float], n: int, tag: str) -> float:
    """Episodes (or chains) per second of one timed run."""
    return n / timer(n, tag)


def _batches(n: int, tag: str, size: int) -> list[list[dict[str, Any]]]:
    records = failure_records(n * size, tag)
    return [records[i : i + size] for i in range(0, len(records), size)]


def _time_service(client: redis.Redis, producer: Producer, n: int, tag: str) -> float:
    client.flushdb()
    records = [r for batch in _batches(n, tag, producer.settings.batch_size) for r in batch]
    t0 = time.perf_counter()
    enqueued = producer.enqueue(records)
    if len(enqueued) != n or not all(e.new for e in enqueued):
        raise RuntimeError(f"expected {n} new batches, got {len(enqueued)}")
    _wait_count(lambda: client.hget(keys.STATS, "episodes"), n, "merged episodes")
    return time.perf_counter() - t0


def _time_bare(client: redis.Redis, sender: Celery, prefix: str, n: int, tag: str) -> float:
    client.flushdb()
    queue_a, queue_b = bare.queues(prefix)
    # the same message body an episode carries: a validated batch as JSON
    payloads = [FailureBatch(failures=[RankingFailure.model_validate(r) for r in batch])
                .model_dump(mode="json") for batch in _batches(n, tag, 5)]
    t0 = time.perf_counter()
    for payload in payloads:
        chain(sender.signature(bare.TASK_A, args=[payload], queue=queue_a),
              sender.signature(bare.TASK_B, queue=queue_b)).apply_async()
    _wait_count(lambda: client.get(bare.done_key(prefix)), n, f"{prefix} chains")
    return time.perf_counter() - t0


def _wait_count(read: Callable[[], Any], n: int, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while int(read() or 0) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {n} {what} (have {read()})")
        time.sleep(0.005)


def _report(opts: Options, results: dict[str, list[float]], n: int, runs: int,
            load_before: str) -> str:
    service = results["service"]
    rows = []
    labels = {"service": "service: enqueue → reason_episode (heuristic) → merge_insights",
              "bare": "bare Celery chain A → B, same config (task events on)",
              "bare_noevents": "bare Celery chain A → B, task events off"}
    for name, values in results.items():
        ratios = [s / b for s, b in zip(service, values, strict=True)]
        rows.append([labels[name], stat(values).fmt(0),
                     "—" if name == "service" else stat(ratios).fmt_ratio()])
    return "\n\n".join([
        "## 1. Overhead ratio: service vs bare Celery chain",
        f"Command: `{opts.command}`",
        f"One worker process per pipeline, `-P {POOL} -c {CONCURRENCY}`, both queues; "
        f"{n} episodes (batches of 5 failures) per run, {runs} interleaved runs after a "
        f"50-episode warm-up; timed from the first enqueue to the last merge (or B). "
        f"Load average before: {load_before}, after: {loadavg()}.",
        table(["pipeline", "per second, median (min–max)",
               "service ÷ this, median of per-run ratios (min–max)"], rows),
        "Target: service ≥ 0.8 × the bare chain.",
    ])
