"""Fixtures: a private Redis per session (or RIPMAP_TEST_REDIS_URL), flushed per test,
and real Celery workers as subprocesses."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
import redis

from schemas.settings import Settings
from state import store
from tests.services import (
    Worker,
    add_private_vhost,
    amqp_error,
    database,
    delete_vhost,
    purge_amqp,
    start_private_redis,
    worker_env,
)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis the tests own: RIPMAP_TEST_REDIS_URL (it gets flushed!) or a private one."""
    external = os.environ.get("RIPMAP_TEST_REDIS_URL")
    if external:
        yield external
        return
    proc, url, data = start_private_redis()
    yield url
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A state-store client on a flushed state database (the broker's is left alone)."""
    c = store.connect(redis_url)
    c.flushdb()
    yield c
    c.close()


@pytest.fixture
def settings(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings pointed at the test Redis, with the rule-based reasoner."""
    for name in list(os.environ):
        if name.startswith("RIPMAP_") or name in ("REDIS_URL", "ANTHROPIC_API_KEY"):
            monkeypatch.delenv(name)
    for name, value in worker_env(redis_url).items():
        if name.startswith("RIPMAP_"):
            monkeypatch.setenv(name, value)
    return Settings()


@pytest.fixture
def private_broker(redis_url: str) -> Iterator[str]:
    """A broker database (4) no shared worker consumes, emptied before and after: the
    batches a test sends there reach only the workers it starts itself."""
    url = database(redis_url, 4)
    redis.Redis.from_url(url).flushdb()
    yield url
    redis.Redis.from_url(url).flushdb()


@pytest.fixture(scope="session")
def session_worker(redis_url: str) -> Iterator[Worker]:
    """One real worker (threads, concurrency 8) on both queues, shared by pipeline tests."""
    w = Worker(worker_env(redis_url), concurrency=8, name="session").wait_ready()
    yield w
    w.stop()


@pytest.fixture
def worker(session_worker: Worker, client: redis.Redis) -> Worker:
    """The shared worker, with a flushed Redis."""
    return session_worker


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A RabbitMQ broker for the AMQP tests: a virtual host of this session's own on the
    server of RIPMAP_TEST_AMQP_URL (removed at the end), or that URL's own vhost where none
    can be made (its queues are purged around each test). Skips when the variable is unset."""
    url = os.environ.get("RIPMAP_TEST_AMQP_URL")
    if not url:
        pytest.skip("RIPMAP_TEST_AMQP_URL is not set: no RabbitMQ to run the AMQP-broker tests "
                    "against (.ci/run sets it when a RabbitMQ answers on 127.0.0.1:5672)")
    problem = amqp_error(url)
    if problem:
        pytest.fail(f"RIPMAP_TEST_AMQP_URL is set but its broker does not answer: {problem}")
    private = add_private_vhost(url)
    if private is None:
        yield url
        return
    yield private[0]
    delete_vhost(private[1])


@pytest.fixture
def amqp_broker(amqp_url: str) -> Iterator[str]:
    """The AMQP broker URL with its test queues emptied before and after the test."""
    purge_amqp(amqp_url)
    yield amqp_url
    purge_amqp(amqp_url)
