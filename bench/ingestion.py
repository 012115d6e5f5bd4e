"""Benchmark 6: ingestion throughput, compared with Redis's own LPUSH rate in the same run.

- HTTP: one ``ripmap-optimizer serve`` process (uvicorn, one process); a small asyncio
  load generator speaking raw HTTP/1.1 keep-alive over 32 connections (so the client's
  own cost stays small) posts single failures, or lists of 100, to ``POST /v1/failures``;
  every answer must be 202.
- ``push`` from one process: ``Pusher.push(failure)`` in a loop (one validated failure per
  call, one thread), and the ``ripmap-optimizer push`` command streaming JSONL on stdin
  (its rate from two input sizes, so start-up cancels).
- ``redis-benchmark -t lpush`` on the same server: with 50 clients (the server's capacity)
  and with 1 (one client's round-trip-bound rate).
No worker runs: what is measured is acceptance; batches that fill are enqueued.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
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
from producer import embedded
from tests.services import ROOT, broker_url, worker_env

ROUNDS = 3
CONNECTIONS = 32


def run(opts: Options) -> str:
    """Measure and return the markdown section (or say why it was skipped)."""
    missing = [p for p in ("producer/push.py", "producer/http.py") if not (ROOT / p).exists()]
    if missing:
        return "## 6. Ingestion throughput\n\nSkipped: " + ", ".join(missing) + " not there yet."
    if not shutil.which("redis-benchmark"):
        return "## 6. Ingestion throughput\n\nSkipped: redis-benchmark is not installed."
    scale = 1 if opts.quick else 3
    load_before = loadavg()
    results: dict[str, list[float]] = {}
    with private_redis() as url, _Api(url) as api:
        measures: dict[str, Callable[[str], float]] = {
            "HTTP, one failure per POST": lambda tag: _http(api.port, 1, 1_500 * scale, tag),
            "HTTP, 100 failures per POST": lambda tag: _http(api.port, 100, 80 * scale, tag),
            "`Pusher.push(failure)`, one thread": lambda tag: _push_loop(url, 3_000 * scale,
                                                                          tag),
            "`ripmap-optimizer push` (JSONL on stdin)": lambda tag: _push_cli(url, 8_000 * scale,
                                                                              tag),
            "redis-benchmark LPUSH, 50 clients": lambda tag: _redis_benchmark(url, 50),
            "redis-benchmark LPUSH, 1 client": lambda tag: _redis_benchmark(url, 1),
        }
        for r in range(ROUNDS):
            for name, measure in measures.items():
                state_client(url).flushall()
                results.setdefault(name, []).append(measure(f"r{r}"))
    return _report(opts, results, load_before)


def _report(opts: Options, results: dict[str, list[float]], load_before: str) -> str:
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
    ])


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


def _push_loop(url: str, n: int, tag: str) -> float:
    from producer.push import Pusher

    records = failure_records(n, f"push-{tag}")
    pusher = Pusher(settings_for(url))
    try:
        pusher.push(failure_records(1, f"warm-{tag}")[0])
        t0 = time.perf_counter()
        for record in records:
            pusher.push(record)
        return n / (time.perf_counter() - t0)
    finally:
        pusher.close()


def _push_cli(url: str, n: int, tag: str) -> float:
    small = _time_cli(url, failure_records(100, f"cli-small-{tag}"))
    large = _time_cli(url, failure_records(n, f"cli-{tag}"))
    return (n - 100) / (large - small)


def _time_cli(url: str, records: list[dict[str, Any]]) -> float:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    exe = str(Path(sys.executable).parent / "ripmap-optimizer")
    t0 = time.perf_counter()
    done = subprocess.run([exe, "push"], input=data, env=worker_env(url), cwd=ROOT,
                          capture_output=True, check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0 or f"{len(records)} failures pushed".encode() not in done.stdout:
        raise RuntimeError(f"push failed: {done.stdout[-500:]!r} {done.stderr[-1500:]!r}")
    return elapsed


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
