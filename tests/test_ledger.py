"""The open-batch ledger: a batch the broker lost (popped by a worker that died before
recording it) is found in no queue on two sweeps and sent again; nothing else is."""

from __future__ import annotations

import json
import time

import redis

from ops import monitor
from producer.api import Producer, chunk, validate_failures
from schemas import tasks
from schemas.failures import FailureBatch
from schemas.settings import Settings
from state import deadletters, inbox, keys, ledger, scripts, store
from tests.factories import episode, failure
from tests.services import Worker, wait_until, worker_env


def _batches(count: int, salt: str) -> list[FailureBatch]:
    return chunk(validate_failures([failure(i, query=f"{salt} {i}") for i in range(count * 5)]), 5)


def _producer(settings: Settings, broker: str) -> Producer:
    return Producer(settings.model_copy(update={"broker_url": broker}))


def _later(settings: Settings) -> float:
    return time.time() + settings.ledger_check_after_seconds + 1


def test_a_batch_popped_and_never_recorded_is_found_on_the_second_sweep(
    settings: Settings, client: redis.Redis, private_broker: str
) -> None:
    sent = _batches(4, "lost")
    _producer(settings, private_broker).enqueue_batches(sent)
    broker = store.connect(private_broker)
    assert ledger.open_count(client) == 4
    report, lost = ledger.find_lost(client, broker, settings, now=_later(settings))
    assert (report.checked, report.missing, lost) == (4, 0, [])
    # what a worker SIGKILLed right after its BRPOP leaves: the message is gone
    popped = json.loads(broker.rpop(tasks.EPISODE_QUEUE))["headers"]["id"]
    t = _later(settings)
    report, lost = ledger.find_lost(client, broker, settings, now=t)
    assert report.missing == 1 and lost == []  # one sighting is not enough
    report, lost = ledger.find_lost(client, broker, settings, now=t + ledger.CONFIRM_SECONDS)
    assert [b.batch_id for b in lost] == [popped]
    assert lost[0] == next(b for b in sent if b.batch_id == popped)


def test_delivered_unacknowledged_and_reasoned_batches_count_as_present(
    settings: Settings, client: redis.Redis, private_broker: str
) -> None:
    first, second = _batches(2, "present")
    _producer(settings, private_broker).enqueue_batches([first, second])
    broker = store.connect(private_broker)
    # one is delivered to a worker (kombu's unacked hash), the other reasoned: its episode
    # waits in the reducer's inbox
    message = json.loads(broker.rpop(tasks.EPISODE_QUEUE))
    broker.hset(ledger.UNACKED, "tag", json.dumps([message, "", tasks.EPISODE_QUEUE]))
    reasoned = json.loads(broker.rpop(tasks.EPISODE_QUEUE))["headers"]["id"]
    inbox.put(client, episode(0, episode_id=reasoned, batch_id=reasoned))
    t = _later(settings)
    for now in (t, t + ledger.CONFIRM_SECONDS, t + 2 * ledger.CONFIRM_SECONDS):
        report, lost = ledger.find_lost(client, broker, settings, now=now)
        assert (report.checked, report.missing, lost) == (2, 0, [])


def test_a_backlog_over_the_scan_limit_is_not_read(
    settings: Settings, client: redis.Redis, private_broker: str
) -> None:
    limited = settings.model_copy(update={"ledger_scan_limit": 100})
    _producer(limited, private_broker).enqueue_batches(_batches(101, "backlog"))
    report, lost = ledger.find_lost(client, store.connect(private_broker), limited,
                                    now=_later(limited))
    assert report.skipped and lost == []


def test_merged_dead_lettered_and_already_merged_batches_leave_the_ledger(
    settings: Settings, client: redis.Redis, private_broker: str
) -> None:
    dead, merged = _batches(2, "closed")
    producer = _producer(settings, private_broker)
    producer.enqueue_batches([dead, merged])
    deadletters.add(client, tasks.REASON_EPISODE, dead.model_dump(mode="json"), "gave up",
                    letter_id=dead.batch_id)
    assert ledger.open_count(client) == 1
    client.set(keys.merged(merged.batch_id), "1")
    # a copy sent again after its merge: the episode's reads close it
    producer.enqueue_batches([merged], force=True)
    assert ledger.open_count(client) == 1
    assert scripts.episode_context(client, merged.batch_id, 3, 3).merged
    assert ledger.open_count(client) == 0
    assert client.zcard(keys.OPEN_SINCE) == 0


def test_the_beat_sends_a_lost_batch_again_and_it_is_merged_once(
    redis_url: str, client: redis.Redis, private_broker: str, settings: Settings
) -> None:
    sent = _batches(3, "e2e")
    _producer(settings, private_broker).enqueue_batches(sent)
    broker = store.connect(private_broker)
    broker.rpop(tasks.EPISODE_QUEUE)  # lost in transport, before any worker runs
    env = worker_env(redis_url, RIPMAP_BROKER_URL=private_broker,
                     RIPMAP_LEDGER_CHECK_AFTER_SECONDS="1")
    w = Worker(env, name="ledger", beat=True).wait_ready()
    try:
        ids = [b.batch_id for b in sent]
        wait_until(lambda: all(store.merged_flags(client, ids)), 90, "all 3 merged")
        assert ledger.resent_count(client) == 1
        assert ledger.open_count(client) == 0
        assert client.llen(keys.EPISODE_LOG) == 3  # each merged once
    finally:
        w.stop()


def test_status_reads_batches_in_flight_and_episodes_awaiting_merge(
    settings: Settings, client: redis.Redis, private_broker: str
) -> None:
    first, second = _batches(2, "status")
    _producer(settings, private_broker).enqueue_batches([first, second])
    inbox.put(client, episode(0, episode_id=first.batch_id, batch_id=first.batch_id))
    ops = monitor.operations(client, settings.model_copy(update={"broker_url": private_broker}))
    assert (ops.open_batches, ops.awaiting_merge, ops.resent_by_ledger) == (2, 1, 0)
    assert ops.queues["episodes"] == 2
