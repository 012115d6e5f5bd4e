"""Shared plumbing for the benchmarks: private services, statistics, sample data, markdown."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

from schemas.settings import Settings
from tests.services import ROOT, Worker, broker_url, start_private_redis, worker_env

SAMPLES = ROOT / "ops" / "data" / "sample_failures.json"


@dataclass(frozen=True)
class Options:
    """What the command line asked for."""

    quick: bool
    command: str


# ---------------------------------------------------------------- services


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A throwaway redis-server for one benchmark; yields its state URL (database 0)."""
    proc, url, data = start_private_redis()
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(20)
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def scratch(work_dir: Path | None, prefix: str) -> Iterator[Path]:
    """``work_dir`` as given (kept), or a temporary one removed at the end."""
    if work_dir is not None:
        yield work_dir
        return
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def clone_bundle(bundle: Path, target: Path, *, fresh: bool = False) -> Path:
    """A clone of a git bundle at ``target`` (kept when one is there, unless ``fresh``)."""
    if fresh:
        shutil.rmtree(target, ignore_errors=True)
    if not (target / ".git").exists():
        subprocess.run(["git", "clone", "-q", str(bundle), str(target)], check=True,
                       capture_output=True)
    return target


def settings_for(url: str, **overrides: Any) -> Settings:
    """Settings for the benchmark process itself, pointed at ``url`` (broker on database 1)."""
    return Settings(redis_url=url, broker_url=broker_url(url), reasoner="heuristic", **overrides)


class BenchWorker(Worker):
    """A real ``celery worker`` subprocess of any app, logging at WARNING (INFO logs a line
    per task, whose cost would be measured too)."""

    def __init__(self, env: dict[str, str], *, app: str = "worker.app",
                 queues: str = "episodes,merge", pool: str = "threads", concurrency: int = 8,
                 name: str = "bench", extra: Sequence[str] = ()) -> None:
        self.log = Path(tempfile.mkstemp(prefix=f"ripmap-bench-{name}-", suffix=".log")[1])
        self.broker = env["RIPMAP_BROKER_URL"]
        self.nodename = f"{name}-{os.getpid()}-{time.time_ns()}@{socket.gethostname()}"
        cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues, "-P", pool,
               "-c", str(concurrency), "-n", self.nodename, "-l", "WARNING",
               "--without-gossip", "--without-mingle", *extra]
        with self.log.open("wb") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> BenchWorker:
        """Block until the worker answers a control ping (at WARNING it prints no banner)."""
        from celery import Celery

        probe = Celery("ripmap_bench_probe", broker=self.broker)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"worker exited: {self.log.read_text()[-3000:]}")
                if probe.control.ping(destination=[self.nodename], timeout=0.5):
                    return self
        finally:
            probe.close()
        raise RuntimeError(f"worker not ready after {timeout}s: {self.log.read_text()[-3000:]}")


    def check(self) -> None:
        """Raise with the log's tail if the worker died or logged an error: a benchmark
        must fail fast rather than wait for work that will never finish."""
        text = self.log.read_text(errors="replace")
        if self.proc.poll() is not None or "ERROR/" in text or "CRITICAL/" in text:
            raise RuntimeError(f"worker {self.nodename} failed:\n{text[-3000:]}")


@contextlib.contextmanager
def running(*started: BenchWorker) -> Iterator[tuple[BenchWorker, ...]]:
    """Wait for every worker to be ready; stop them all on the way out, whatever happened.
    Their logs are removed after a clean run and kept (in /tmp) when something failed."""
    ok = False
    try:
        for w in started:
            w.wait_ready()
        yield started
        ok = True
    finally:
        for w in started:
            w.stop(timeout=20)
            if ok:
                w.log.unlink(missing_ok=True)


def wait_count(read: Callable[[], Any], n: int, what: str, check: Callable[[], None],
               timeout: float = 300) -> None:
    """Poll ``read`` (a counter) every 5 ms until it reaches ``n``; ``check`` raises on
    trouble."""
    deadline = time.monotonic() + timeout
    polls = 0
    while int(read() or 0) < n:
        polls += 1
        if polls % 100 == 0:
            check()
        if time.monotonic() > deadline:
            check()
            raise RuntimeError(f"timed out waiting for {n} {what} (have {read()})")
        time.sleep(0.005)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu(client: redis.Redis) -> float:
    """CPU seconds the redis-server has used so far."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def env_for(url: str, **overrides: str) -> dict[str, str]:
    """Worker environment for the private Redis (the tests' helper)."""
    return worker_env(url, **overrides)


def state_client(url: str) -> redis.Redis:
    """A plain client on the state database."""
    return redis.Redis.from_url(url, decode_responses=True)


# ---------------------------------------------------------------- sample data


def sample_failures() -> list[dict[str, Any]]:
    """The realistic failures shipped with the producer."""
    return list(json.loads(SAMPLES.read_text()))


def failure_records(n: int, tag: str) -> list[dict[str, Any]]:
    """``n`` distinct realistic failures: the samples cycled, made unique by ``tag``."""
    base = sample_failures()
    out = []
    for i in range(n):
        record = dict(base[i % len(base)])
        record["commit_message"] = f"{record.get('commit_message', '')} ({tag}-{i})"
        out.append(record)
    return out


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Stat:
    """Median and range of repeated measurements."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def lo(self) -> float:
        return min(self.values)

    @property
    def hi(self) -> float:
        return max(self.values)

    def fmt(self, digits: int = 0, unit: str = "") -> str:
        """``median (min-max)``."""
        return (f"{self.median:,.{digits}f}{unit} ({self.lo:,.{digits}f}–"
                f"{self.hi:,.{digits}f})")

    def fmt_ratio(self) -> str:
        """``**median** (min-max)`` with two decimals."""
        return f"**{self.median:.2f}** ({self.lo:.2f}–{self.hi:.2f})"


def stat(values: Sequence[float]) -> Stat:
    """A Stat of at least one value."""
    if not values:
        raise ValueError("no measurements")
    return Stat(tuple(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# ---------------------------------------------------------------- reporting


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def loadavg() -> str:
    """The 1-minute load average, to show how busy the shared machine was."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def machine_info() -> list[tuple[str, str]]:
    """Machine, software versions and the commit the figures come from."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True,
                                   text=True, check=False).stdout.split()
    versions = ", ".join(f"{p} {_version(p)}" for p in
                         ("celery", "kombu", "redis", "pydantic", "anthropic", "limits"))
    return [
        ("machine", f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} "
                    f"{platform.release()}"),
        ("python", platform.python_version()),
        ("redis-server", next((w.split("=")[1] for w in redis_version if w.startswith("v=")),
                              "?")),
        ("libraries", versions),
        ("commit", _git("rev-parse", "--short", "HEAD") + (" (+ uncommitted changes)"
                                                          if _git("status", "--porcelain")
                                                          else "")),
        ("date", time.strftime("%Y-%m-%d %H:%M %Z")),
    ]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()
