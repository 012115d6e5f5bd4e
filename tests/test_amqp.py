"""RabbitMQ as the broker, Redis as the state store, end to end.

The pipeline, a kill test, the wire contract and the ledger's sweep against a real RabbitMQ
(``RIPMAP_TEST_AMQP_URL``; the ``amqp_url`` fixture makes a virtual host of the session's
own), with real Celery workers and the tests' Redis as the state store. Without the
variable these tests skip, saying so; the broker-kind unit test runs everywhere.

On AMQP the sweep does not read the queues: it trusts what the broker confirmed (durable
queues, persistent messages, late acks) and sends again only batches claimed and never
confirmed sent (``state.ledger``).
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections import Counter
from pathlib import Path

import amqp
import redis
from kombu import Connection

from ops import monitor
from producer.api import Producer, chunk, validate_failures
from schemas import tasks
from schemas.failures import FailureBatch
from schemas.settings import Settings
from state import deadletters, keys, ledger, scripts, store
from tests import reliability
from tests.factories import failure
from tests.fake_claude import fake_claude
from tests.services import Worker, declare_amqp_queues, wait_until, worker_env
from tests.test_chaos import account
from tests.test_wire import assert_merged_from_the_wire

RECEIVED = "Task ripmap.reason_episode[{}] received"


def _batches(count: int, salt: str) -> list[FailureBatch]:
    return chunk(validate_failures([failure(i, query=f"{salt} {i}") for i in range(count * 5)]), 5)


def _producer(settings: Settings, broker: str) -> Producer:
    return Producer(settings.model_copy(update={"broker_url": broker}))


def _env(redis_url: str, broker: str, **overrides: str) -> dict[str, str]:
    return worker_env(redis_url, RIPMAP_BROKER_URL=broker, **overrides)


def _merged_all(client: redis.Redis, ids: list[str]) -> bool:
    return all(store.merged_flags(client, ids))


def _log_errors(*workers: Worker) -> list[str]:
    return [line for w in workers for line in w.log.read_text(errors="replace").splitlines()
            if "ERROR" in line or "CRITICAL" in line or "Traceback" in line]


def _busy(w: Worker) -> bool:
    """Whether ``w`` holds an episode it has not finished (received, not succeeded)."""
    text = w.log.read_text(errors="replace")
    return len(re.findall(r"reason_episode\[[^\]]+\] received", text)) > len(
        re.findall(r"reason_episode\[[^\]]+\] succeeded", text))


def test_the_sweep_reads_the_broker_it_is_given() -> None:
    assert ledger.broker_kind("redis://127.0.0.1:6379/1") == "redis"
    assert ledger.broker_kind("rediss://:pw@host:6380/0?ssl_cert_reqs=required") == "redis"
    for url in ("amqp://guest:guest@127.0.0.1:5672//", "amqps://u:p@mq/vh", "pyamqp://mq//"):
        assert ledger.broker_kind(url) == "amqp"
        assert ledger.connect_broker(url) == ledger.ConfirmingBroker("amqp")
    assert ledger.broker_kind("sqs://") == "other"
    assert isinstance(ledger.connect_broker("redis://127.0.0.1:1/0"), redis.Redis)


AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def test_the_producer_publishes_with_confirms_on_amqp(settings: Settings) -> None:
    producer = _producer(settings, AMQP_URL)
    assert producer.celery.conf.broker_transport_options.get("confirm_publish") is True


def test_the_workers_publish_with_confirms_on_amqp(settings: Settings) -> None:
    from worker.config import celery_config

    config = celery_config(settings.model_copy(update={"broker_url": AMQP_URL}))
    assert config["broker_transport_options"].get("confirm_publish") is True
    assert ledger.publish_options("redis://127.0.0.1:6379/1") == {}


def test_a_batch_sent_before_any_worker_declared_its_queue_is_kept(
    settings: Settings, client: redis.Redis, amqp_broker: str
) -> None:
    with Connection(amqp_broker) as conn:  # a fresh broker: no worker ever started
        channel = conn.channel()
        channel.queue_delete(tasks.EPISODE_QUEUE)
        channel.close()
    _producer(settings, amqp_broker).enqueue_batches(_batches(1, "before any worker"))
    # RabbitMQ confirms a message no queue is bound for, and drops it; the sweep trusts it
    assert monitor.queue_depths(amqp_broker)[tasks.EPISODE_QUEUE] == 1


def test_the_amqp_sweep_sends_again_only_what_was_never_confirmed_sent(
    settings: Settings, client: redis.Redis, amqp_broker: str
) -> None:
    declare_amqp_queues(amqp_broker)  # no consumer: the sent batches stay queued
    sent, (claimed, lapsed) = _batches(3, "confirmed"), _batches(2, "unconfirmed")
    _producer(settings, amqp_broker).enqueue_batches(sent)
    # what a producer that died between its claim and its publish leaves: a short claim,
    # or (after 60 s) none at all
    scripts.claim_batches(client, [(b.batch_id, b.model_dump_json()) for b in (claimed, lapsed)],
                          60)
    client.delete(keys.batch_seen(lapsed.batch_id))
    broker = ledger.ConfirmingBroker("amqp")
    t = time.time() + settings.ledger_check_after_seconds + 1
    report, lost = ledger.find_lost(client, broker, settings, now=t)
    assert (report.checked, report.missing, lost) == (5, 2, [])  # one sighting is not enough
    report, lost = ledger.find_lost(client, broker, settings, now=t + ledger.CONFIRM_SECONDS)
    assert {b.batch_id for b in lost} == {claimed.batch_id, lapsed.batch_id}
    assert report.as_dict()["broker"] == "amqp" and report.skipped is None
    # status reads the queue depths from the broker in use
    ops = monitor.operations(client, settings.model_copy(update={"broker_url": amqp_broker}))
    assert ops.queues == {tasks.EPISODE_QUEUE: 3, tasks.MERGE_QUEUE: 0}
    assert ops.open_batches == 5


def test_the_pipeline_on_rabbitmq_merges_every_batch_once(
    redis_url: str, settings: Settings, client: redis.Redis, amqp_broker: str
) -> None:
    w = Worker(_env(redis_url, amqp_broker), concurrency=4, name="amqp").wait_ready()
    try:
        sent = _batches(12, "amqp pipeline")
        producer = _producer(settings, amqp_broker)
        assert all(e.new for e in producer.enqueue_batches(sent))
        assert not any(e.new for e in producer.enqueue_batches(sent))  # same batches: once
        producer.close()
        ids = [b.batch_id for b in sent]
        wait_until(lambda: _merged_all(client, ids) or deadletters.count(client), 90,
                   "all 12 merged")
        acc = account(client, set(ids))
        acc.assert_exact()
        assert acc.merged == set(ids) and not acc.dead
        assert ledger.open_count(client) == 0
        wait_until(lambda: monitor.queue_depths(amqp_broker) == {tasks.EPISODE_QUEUE: 0,
                                                                 tasks.MERGE_QUEUE: 0},
                   10, "empty queues")
        assert _log_errors(w) == []
    finally:
        w.stop()


def test_the_worker_merges_a_protocol2_message_published_with_plain_amqp(
    redis_url: str, client: redis.Redis, amqp_broker: str
) -> None:
    w = Worker(_env(redis_url, amqp_broker), concurrency=2, name="amqp-wire").wait_ready()
    try:
        # what a Rust or Go producer sends with its AMQP client: a JSON body, the three
        # headers protocol 2 cannot do without, persistent, to the queue by name
        payload = {"failures": [failure(1, ndcg=0), failure(2, ndcg=0)]}
        message = amqp.Message(
            json.dumps([[payload], {}, {}]), content_type="application/json",
            content_encoding="utf-8", delivery_mode=2,
            application_headers={"lang": "rust", "task": tasks.REASON_EPISODE,
                                 "id": uuid.uuid4().hex})
        parts = amqp_broker.split("://", 1)[1]
        creds, rest = parts.rsplit("@", 1)
        host, vhost = rest.split("/", 1)
        user, password = creds.split(":", 1)
        from urllib.parse import unquote

        with amqp.Connection(host=host, userid=unquote(user), password=unquote(password),
                             virtual_host=unquote(vhost) or "/") as conn:
            conn.connect()
            channel = conn.channel()
            channel.confirm_select()
            channel.basic_publish(message, exchange="", routing_key=tasks.EPISODE_QUEUE)
        assert_merged_from_the_wire(client, payload)
    finally:
        w.stop()


def test_the_sweep_on_rabbitmq_reports_and_sends_a_claimed_unsent_batch_again(
    redis_url: str, settings: Settings, client: redis.Redis, amqp_broker: str
) -> None:
    sent = _batches(3, "amqp sweep")
    unsent = sent.pop()
    # a producer that died between its claim and its publish: the batch is on the ledger
    # and in no queue, and no one will ever confirm its send
    scripts.claim_batches(client, [(unsent.batch_id, unsent.model_dump_json())], 60)
    env = _env(redis_url, amqp_broker, RIPMAP_LEDGER_CHECK_AFTER_SECONDS="1")
    w = Worker(env, concurrency=4, name="amqp-sweep", beat=True).wait_ready()
    try:
        _producer(settings, amqp_broker).enqueue_batches(sent)
        ids = [b.batch_id for b in [*sent, unsent]]
        wait_until(lambda: _merged_all(client, ids), 60, "all 3 merged")
        assert ledger.resent_count(client) == 1  # the unsent one, not the two confirmed
        assert ledger.open_count(client) == 0
        assert client.llen(keys.EPISODE_LOG) == 3

        def reports() -> list[str]:
            return [line for line in w.log.read_text(errors="replace").splitlines()
                    if "ripmap.sweep_open[" in line and " succeeded " in line]

        wait_until(lambda: len(reports()) >= 3, 30, "three sweeps")
        assert all("'broker': 'amqp'" in line for line in reports()), reports()
        assert _log_errors(w) == []
        assert "Redis URL must specify" not in w.log.read_text()
    finally:
        w.stop()


def test_sigkilled_workers_on_rabbitmq_lose_and_double_nothing(
    redis_url: str, settings: Settings, client: redis.Redis, amqp_broker: str, tmp_path: Path
) -> None:
    """Workers SIGKILLed while reasoning, and restarted: RabbitMQ requeues what a dead
    consumer held unacknowledged (running and reserved) at once; every batch is merged
    exactly once and nothing is lost."""
    rng = random.Random()
    env = _env(redis_url, amqp_broker, RIPMAP_REASONER="claude-cli", PATH=fake_claude(tmp_path),
               FAKE_CLAUDE_DELAY="0.6", RIPMAP_CLAUDE_CLI_TIMEOUT_SECONDS="5",
               RIPMAP_LEDGER_CHECK_AFTER_SECONDS="3")
    declare_amqp_queues(amqp_broker)
    workers: dict[str, Worker] = {}
    logs: list[Path] = []

    def start(name: str, pool: str, concurrency: int, beat: bool = False) -> None:
        w = Worker(env, queues=tasks.MERGE_QUEUE if beat else tasks.EPISODE_QUEUE, pool=pool,
                   concurrency=concurrency, name=f"amqp-{name}", beat=beat)
        workers[name] = w.wait_ready()
        logs.append(w.log)

    start("beat", "threads", 2, beat=True)  # the merge queue only; never killed
    start("threads", "threads", 4)
    start("prefork", "prefork", 2)
    todo = _batches(max(10, round(40 * reliability.scale())), "amqp kills")
    kills, restarts = 0, 0
    producer = _producer(settings, amqp_broker)
    sent: set[str] = set()
    try:
        rounds = 4
        per_round = -(-len(todo) // (rounds + 1))
        for k in range(rounds):
            sent |= {e.batch_id for e in producer.enqueue_batches(
                todo[k * per_round:(k + 1) * per_round])}
            name = ("threads", "prefork")[k % 2]
            time.sleep(rng.uniform(0.05, 0.5))  # a random moment while it reasons
            deadline = time.monotonic() + 5
            while not _busy(workers[name]) and time.monotonic() < deadline:
                time.sleep(0.02)
            workers[name].kill()
            kills += 1
            start(name, "threads" if name == "threads" else "prefork",
                  4 if name == "threads" else 2)
            restarts += 1
        sent |= {e.batch_id for e in producer.enqueue_batches(todo[rounds * per_round:])}
        producer.close()
        ids = sorted(sent)
        wait_until(lambda: _merged_all(client, ids) and ledger.open_count(client) == 0, 120,
                   "every batch merged")
        acc = account(client, sent)
        text = "".join(p.read_text(errors="replace") for p in logs)
        deliveries = Counter({i: text.count(RECEIVED.format(i)) for i in ids})
        reliability.record("amqp_worker_kills", **acc.figures(), kills=kills, restarts=restarts,
                           redelivered=sum(deliveries.values()) - len(deliveries),
                           resent_by_ledger=ledger.resent_count(client))
        acc.assert_exact()
        assert acc.merged == sent and len(sent) == len(todo)
        # the kills hit work in flight: some episodes were delivered again, harmlessly
        assert sum(deliveries.values()) > len(deliveries)
        assert ledger.resent_count(client) == 0  # every send was confirmed: none re-sent
    finally:
        for w in workers.values():
            w.stop()
