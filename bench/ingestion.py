"""Benchmark 6: ingestion throughput, compared with Redis's own LPUSH rate in the same run.

- HTTP: one ``ripmap-optimizer serve`` process (uvicorn, one process); a small asyncio
  load generator speaking raw HTTP/1.1 keep-alive over 32 connections (so the client's
  own cost stays small) posts single failures, or lists of 100, to ``POST /v1/failures``;
  every answer must be 202.
- ``push`` from one process: ``Pusher.push(failure)`` in a loop (one validated failure per
  call, one thread), and the ``ripmap-optimizer push`` command streaming JSONL on stdin
  (its rate from two input sizes, so start-up cancels). For these two, the CPU time per
  failure of the pushing process and of Redis too: on a shared machine it moves much less
  than the wall-clock rate does.
- ``redis-benchmark -t lpush`` on the same server: with 50 clients (the server's capacity)
  and with 1 (one client's round-trip-bound rate).
No worker runs: what is measured is acceptance; batches that fill are enqueued.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    Options,
    failure_records,
    loadavg,
    private_redis,
    settings_for,
    stat,
    state_client,
    table,
)
from ops import embedded
from producer.push import Pusher
from tests.services import ROOT, broker_url, worker_env

ROUNDS = 3
CONNECTIONS = 32
LOOP = "`Pusher.push(failure)`, one thread"
CLI = "`ripmap-optimizer push` (JSONL on stdin)"


@dataclass
class CpuLog:
    """Per measurement: CPU seconds per failure of the pushing process, and of Redis."""

    rows: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def add(self, name: str, client: float, server: float, n: int) -> None:
        """Record one measurement of ``n`` failures."""
        self.rows.setdefault(name, []).append((client / n, server / n))


def run(opts: Options) -> str:
    """Measure and return the markdown section (or say why it was skipped)."""
    missing = [p for p in ("producer/push.py", "ops/http.py") if not (ROOT / p).exists()]
    if missing:
        return "## 6. Ingestion throughput\n\nSkipped: " + ", ".join(missing) + " not there yet."
    if not shutil.which("redis-benchmark"):
        return "## 6. Ingestion throughput\n\nSkipped: redis-benchmark is not installed."
    scale = 1 if opts.quick else 3
    load_before = loadavg()
    results: dict[str, list[float]] = {}
    cpu = CpuLog()
    with private_redis() as url, _Api(url) as api:
        measures: dict[str, Callable[[str], float]] = {
            "HTTP, one failure per POST": lambda tag: _http(api.port, 1, 1_500 * scale, tag),
            "HTTP, 100 failures per POST": lambda tag: _http(api.port, 100, 80 * scale, tag),
            LOOP: lambda tag: _push_loop(url, 3_000 * scale, tag, cpu),
            CLI: lambda tag: _push_cli(url, 20_000 * scale, tag, cpu),
            "redis-benchmark LPUSH, 50 clients": lambda tag: _redis_benchmark(url, 50),
            "redis-benchmark LPUSH, 1 client": lambda tag: _redis_benchmark(url, 1),
        }
        for r in range(ROUNDS):
            for name, measure in measures.items():
                state_client(url).flushall()
                results.setdefault(name, []).append(measure(f"r{r}"))
    return _report(opts, results, cpu, load_before)


def _report(opts: Options, results: dict[str, list[float]], cpu: CpuLog,
            load_before: str) -> str:
    lpush = results["redis-benchmark LPUSH, 50 clients"]
    lpush1 = results["redis-benchmark LPUSH, 1 client"]
    rows = []
    for name, values in results.items():
        rows.append([name, stat(values).fmt(0),
                     stat([v / b for v, b in zip(values, lpush, strict=True)]).fmt(3),
                     stat([v / b for v, b in zip(values, lpush1, strict=True)]).fmt(3)])
    return "\n\n".join([
        "## 6. Ingestion throughput",
        f"Command: `{opts.command}`",
        f"{ROUNDS} interleaved rounds; the state is flushed before each measurement. HTTP "
        f"through {CONNECTIONS} keep-alive connections to one uvicorn process; every answer "
        f"checked to be 202. Load average before: {load_before}, after: {loadavg()}.",
        table(["what", "failures/s, median (min–max)", "÷ LPUSH/s with 50 clients",
               "÷ LPUSH/s with 1 client"], rows),
        "Targets: single-failure HTTP POSTs ≥ 1,000/s on one process; `push` ≥ 10,000 "
        "failures/s.",
        "CPU time per failure of the pushing process and of the Redis server, and the rate "
        "they would allow if nothing else ran (one over their sum); the command's start-up "
        "cancels as above:",
        table(["what", "µs CPU per failure, pusher", "µs CPU per failure, Redis",
               "failures/s if CPU-bound"], _cpu_rows(cpu)),
    ])


def _cpu_rows(cpu: CpuLog) -> list[list[str]]:
    rows = []
    for name, values in cpu.rows.items():
        client, server = [v[0] for v in values], [v[1] for v in values]
        rows.append([name, stat([c * 1e6 for c in client]).fmt(1),
                     stat([s * 1e6 for s in server]).fmt(1),
                     stat([1 / (c + s) for c, s in values]).fmt(0)])
    return rows


def _redis_cpu(url: str) -> float:
    """CPU seconds the Redis server has used so far."""
    info = state_client(url).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# ---------------------------------------------------------------- HTTP


class _Api:
    """``ripmap-optimizer serve`` on a free port, against the private Redis."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.port = embedded.free_port()

    def __enter__(self) -> _Api:
        exe = str(Path(sys.executable).parent / "ripmap-optimizer")
        self.proc = subprocess.Popen(
            [exe, "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning"],
            env=worker_env(self.url), cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ripmap-optimizer serve exited")
            try:
                status, _ = asyncio.run(_request(self.port, b"GET", "/healthz", b""))
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("ripmap-optimizer serve did not answer /healthz in 30 s")

    def __exit__(self, *exc: object) -> None:
        embedded.stop([self.proc], timeout=10)


def _http(port: int, per_post: int, posts: int, tag: str) -> float:
    records = failure_records(per_post * posts, f"http-{per_post}-{tag}")
    bodies = [json.dumps(records[i] if per_post == 1 else records[i : i + per_post]).encode()
              for i in range(0, len(records), per_post)]
    elapsed = asyncio.run(_blast(port, bodies))
    return len(records) / elapsed


async def _blast(port: int, bodies: list[bytes]) -> float:
    pending = iter(bodies)
    statuses: list[int] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for body in pending:
                writer.write(_post(body))
                statuses.append(await _response(reader))
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    elapsed = time.perf_counter() - t0
    bad = [s for s in statuses if s != 202]
    if bad or len(statuses) != len(bodies):
        raise RuntimeError(f"{len(bad)} answers were not 202 (e.g. {bad[:3]})")
    return elapsed


def _post(body: bytes) -> bytes:
    return (b"POST /v1/failures HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def _response(reader: asyncio.StreamReader) -> int:
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def _request(port: int, method: bytes, path: str, body: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(method + b" " + path.encode() + b" HTTP/1.1\r\nHost: bench\r\n"
                 b"Connection: close\r\nContent-Length: " + str(len(body)).encode()
                 + b"\r\n\r\n" + body)
    status = await _response(reader)
    writer.close()
    return status, b""


# ---------------------------------------------------------------- push


def _push_loop(url: str, n: int, tag: str, cpu: CpuLog) -> float:
    records = failure_records(n, f"push-{tag}")
    pusher = Pusher(settings_for(url))
    try:
        pusher.push(failure_records(1, f"warm-{tag}")[0])
        t0, c0, s0 = time.perf_counter(), time.process_time(), _redis_cpu(url)
        for record in records:
            pusher.push(record)
        elapsed = time.perf_counter() - t0
        cpu.add(LOOP, time.process_time() - c0, _redis_cpu(url) - s0, n)
        return n / elapsed
    finally:
        pusher.close()


def _push_cli(url: str, n: int, tag: str, cpu: CpuLog) -> float:
    small = _time_cli(url, failure_records(100, f"cli-small-{tag}"))
    large = _time_cli(url, failure_records(n, f"cli-{tag}"))
    cpu.add(CLI, large[1] - small[1], large[2] - small[2], n - 100)
    return (n - 100) / (large[0] - small[0])


def _time_cli(url: str, records: list[dict[str, Any]]) -> tuple[float, float, float]:
    """Wall seconds, the command's CPU seconds and Redis's, for pushing ``records``."""
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    exe = str(Path(sys.executable).parent / "ripmap-optimizer")
    before, s0 = resource.getrusage(resource.RUSAGE_CHILDREN), _redis_cpu(url)
    t0 = time.perf_counter()
    done = subprocess.run([exe, "push"], input=data, env=worker_env(url), cwd=ROOT,
                          capture_output=True, check=False)
    elapsed = time.perf_counter() - t0
    after, server = resource.getrusage(resource.RUSAGE_CHILDREN), _redis_cpu(url) - s0
    if done.returncode != 0 or f"{len(records)} failures pushed".encode() not in done.stdout:
        raise RuntimeError(f"push failed: {done.stdout[-500:]!r} {done.stderr[-1500:]!r}")
    used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return elapsed, used, server


# ---------------------------------------------------------------- redis-benchmark


def _redis_benchmark(url: str, clients: int) -> float:
    port = url.rsplit(":", 1)[1].split("/")[0]
    db = broker_url(url).rsplit("/", 1)[1]
    requests = 200_000 if clients > 1 else 30_000
    done = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", port, "--dbnum", db,
                           "-t", "lpush", "-n", str(requests), "-c", str(clients), "-q"],
                          capture_output=True, text=True, check=True)
    found = re.search(r"LPUSH: ([\d.]+) requests per second", done.stdout.replace("\r", "\n"))
    if not found:
        raise RuntimeError(f"unexpected redis-benchmark output: {done.stdout[-500:]}")
    return float(found.group(1))
