"""Benchmark 5: LLM-bound scaling against the local Messages API server at 1.0 s latency.

The ``anthropic`` reasoner (real SDK, one client per process) calls ``tests.fake_anthropic``
running in its own process. For each configuration the episodes queue is filled first,
then the episode worker process(es) start (``-P threads -c C --prefetch-multiplier 2``,
queue ``episodes``) next to one merge worker (``-c 4``, queue ``merge``), as the embedded
default lays them out. ``RIPMAP_BENCH_LLM_CONFIGS=gevent:1x64,threads:2x256`` measures
other pools and shapes (pool:processes x concurrency). The
rate is taken in steady state, from the end of the first wave to the last merge, and compared
with the ideal: processes × C / latency. The fleet rate limiter stays on, with limits far
above what is reached, so its Redis round trips are part of the cost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

import redis

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
)
from ops.embedded import EPISODE_PREFETCH_MULTIPLIER
from producer.api import Producer
from state import keys
from tests.services import ROOT

LATENCY = 1.0
ROUNDS = 3
LIMITS = {"RIPMAP_LLM_REQUESTS_PER_MINUTE": "10000000",
          "RIPMAP_LLM_TOKENS_PER_MINUTE": "100000000000"}


@dataclass(frozen=True)
class Run:
    """One run: steady-state rate and CPU ms per episode by process."""

    rate: float
    worker_ms: float
    fake_ms: float
    redis_ms: float
    max_in_flight: int


def run(opts: Options) -> str:
    """Measure and return the markdown section (or say why it was skipped)."""
    missing = [p for p in ("tests/fake_anthropic.py", "worker/reasoners/anthropic_api.py")
               if not (ROOT / p).exists()]
    if missing:
        return "## 5. LLM-bound scaling\n\nSkipped: " + ", ".join(missing) + " not there yet."
    configs = _configs(opts.quick)
    load_before = loadavg()
    rows = []
    with private_redis() as url, _FakeServer() as fake:
        env = env_for(url, **_reasoner_env(fake.url))
        with running(BenchWorker(env, queues="merge", concurrency=4, name="llm-merge")):
            for pool, procs, conc in configs:
                runs = [_run(url, env, fake, pool, procs, conc, opts.quick)
                        for _ in range(ROUNDS)]
                rows.append(_row(pool, procs, conc, runs))
    return _report(opts, rows, load_before)


def _reasoner_env(base_url: str) -> dict[str, str]:
    from tests.fake_anthropic import reasoner_env

    return reasoner_env(base_url, **LIMITS)


def _configs(quick: bool) -> list[tuple[str, int, int]]:
    """(pool, processes, concurrency) to measure; ``RIPMAP_BENCH_LLM_CONFIGS`` overrides,
    e.g. ``threads:1x64,gevent:1x64``."""
    spec = os.environ.get("RIPMAP_BENCH_LLM_CONFIGS")
    if spec:
        out = []
        for item in spec.split(","):
            pool, _, shape = item.partition(":")
            procs, _, conc = shape.partition("x")
            out.append((pool, int(procs), int(conc)))
        return out
    shapes = [(1, 16), (1, 64), (2, 64)] if quick else [(1, 16), (1, 64), (1, 256),
                                                        (2, 64), (2, 256)]
    return [("threads", p, c) for p, c in shapes]


def _run(url: str, env: dict[str, str], fake: _FakeServer, pool: str, procs: int, conc: int,
         quick: bool) -> Run:
    client = state_client(url)
    client.flushdb()
    waves = 3 if quick or procs * conc >= 256 else 5
    n = waves * procs * conc
    producer = Producer(settings_for(url))
    producer.enqueue(failure_records(5 * n, f"llm-{procs}x{conc}-{time.time_ns()}"))
    producer.close()
    fake.reset()
    prefetch = ["--prefetch-multiplier", str(EPISODE_PREFETCH_MULTIPLIER)]
    workers = [BenchWorker(env, queues="episodes", pool=pool, concurrency=conc, name=f"llm{i}",
                           extra=prefetch) for i in range(procs)]
    with running(*workers):
        cpu0, redis0, fake0 = _cpu(workers), redis_cpu(client), fake.cpu()
        window = _watch(client, n, procs * conc, workers)
        worker_cpu = _cpu(workers) - cpu0
    result = Run(rate=window, worker_ms=worker_cpu * 1000 / n,
                 fake_ms=(fake.cpu() - fake0) * 1000 / n,
                 redis_ms=(redis_cpu(client) - redis0) * 1000 / n,
                 max_in_flight=int(fake.stats().get("max_in_flight", 0)))
    client.close()
    return result


def _cpu(workers: list[BenchWorker]) -> float:
    return sum(process_cpu(w.proc.pid) for w in workers)


def _watch(client: redis.Redis, n: int, slots: int, workers: list[BenchWorker]) -> float:
    """Poll the merged count until all ``n`` are merged; the steady-state rate.

    With every slot busy, episodes finish in waves of ``slots``: counting from the end of
    the first wave (``slots`` merged) to the end of the last (``n``) spans whole waves, so
    the quantisation of a fixed-percentage window doesn't skew the rate.
    """
    start: tuple[float, int] | None = None
    deadline = time.monotonic() + 600
    polls = 0
    while True:
        count = int(client.hget(keys.STATS, "episodes") or 0)
        now = time.perf_counter()
        if start is None and count >= slots:
            start = (now, count)
        if count >= n and start is not None:
            return (count - start[1]) / (now - start[0])
        polls += 1
        if polls % 50 == 0:
            for w in workers:
                w.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {count} of {n} episodes merged in 600 s")
        time.sleep(0.02)


class _FakeServer:
    """``python -m tests.fake_anthropic`` in its own process."""

    def __enter__(self) -> _FakeServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fake_anthropic", "--latency", str(LATENCY)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            raise RuntimeError("the fake Messages API server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def stats(self) -> dict[str, int]:
        import httpx

        return dict(httpx.get(self.url + "/fake/stats", timeout=10).json())

    def reset(self) -> None:
        import httpx

        httpx.post(self.url + "/fake/reset", timeout=10)

    def cpu(self) -> float:
        return process_cpu(self.proc.pid)


def _row(pool: str, procs: int, conc: int, runs: list[Run]) -> list[object]:
    ideal = procs * conc / LATENCY
    return [f"{procs} × `-P {pool} -c {conc}`", f"{ideal:.0f}", stat([r.rate for r in runs]).fmt(1),
            stat([r.rate / ideal for r in runs]).fmt_ratio(),
            stat([r.worker_ms for r in runs]).fmt(1), stat([r.fake_ms for r in runs]).fmt(1),
            stat([r.redis_ms for r in runs]).fmt(2),
            f"{max(r.max_in_flight for r in runs)}"]


def _report(opts: Options, rows: list[list[object]], load_before: str) -> str:
    return "\n\n".join([
        "## 5. LLM-bound scaling (local Messages API server, 1.0 s latency)",
        f"Command: `{opts.command}`",
        f"Episode workers `-P POOL -c C --prefetch-multiplier {EPISODE_PREFETCH_MULTIPLIER}` "
        f"on queue `episodes`, plus one merge worker; the "
        f"queue is filled before the episode workers start; rate from the end of the first "
        f"wave (C × processes merged) to the last merge; "
        f"{ROUNDS} runs per configuration. CPU is milliseconds per episode of the episode "
        f"worker processes, the fake server process and redis-server (the machine has 2 "
        f"cores: at ideal rate, CPU ms per episode × episodes/s above 2,000 ms/s cannot be "
        f"met). Load average before: {load_before}, after: {loadavg()}.",
        table(["processes × concurrency", "ideal episodes/s", "episodes/s, median (min–max)",
               "fraction of ideal", "worker CPU ms/episode", "fake server CPU ms/episode",
               "redis CPU ms/episode", "max requests in flight at the server"], rows),
        "Targets: ≥ 0.9 of ideal at 64, ≥ 0.8 at 256, two processes about twice one.",
    ])
