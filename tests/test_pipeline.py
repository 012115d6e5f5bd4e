"""The whole path through a real worker: batches in, one merged episode each."""

import json
import time

import redis
from celery import Celery

from producer.api import Producer
from schemas import tasks
from schemas.settings import Settings
from state import deadletters, keys, store
from tests.factories import failure
from tests.services import Worker, purge_broker, wait_until, worker_env


def _wait_merged(client: redis.Redis, ids: list[str], timeout: float = 120) -> None:
    wait_until(lambda: all(store.merged_flags(client, ids)), timeout, f"{len(ids)} merges")


def test_200_batches_one_episode_each_and_aggregates_add_up(
    worker: Worker, client: redis.Redis, settings: Settings
) -> None:
    producer = Producer(settings)
    records = [failure(i, actual_top=["src/main.rs", "vendor/x/lib.rs"] if i % 3 else
                       ["README.md", "Cargo.toml"]) for i in range(1000)]
    ids = [r.batch_id for r in producer.enqueue(records)]
    assert len(ids) == len(set(ids)) == 200
    _wait_merged(client, ids)

    log = [json.loads(x) for x in client.lrange(keys.EPISODE_LOG, 0, -1)]
    assert sorted(e["batch_id"] for e in log) == sorted(ids)
    summary = store.summary(client, top_k=100)
    assert summary.episodes == 200
    assert summary.proposals == sum(len(e["answer"]["proposed_changes"]) for e in log)
    per_change: dict[tuple[str, str], int] = {}
    for e in log:
        for c in e["answer"]["proposed_changes"]:
            key = (c["param"], c["direction"])
            per_change[key] = per_change.get(key, 0) + 1
    assert {(c.param, c.direction): c.count for c in summary.changes} == per_change
    per_signature: dict[str, int] = {}
    for e in log:
        for s in e["failure_signatures"]:
            per_signature[s] = per_signature.get(s, 0) + 1
    assert {i.text: i.count for i in summary.signatures} == per_signature

    # redelivering every episode to the reducer changes nothing
    before = store.summary(client, top_k=100)
    sender = Celery(broker=settings.broker)
    for e in log:
        sender.send_task(tasks.MERGE_INSIGHTS, args=[e], queue=tasks.MERGE_QUEUE)
    wait_until(lambda: _queue_len(settings, tasks.MERGE_QUEUE) == 0, 60, "redeliveries")
    time.sleep(0.5)
    assert store.summary(client, top_k=100) == before


def test_same_batch_submitted_twice_is_one_episode(
    worker: Worker, client: redis.Redis, settings: Settings
) -> None:
    producer = Producer(settings)
    first = producer.enqueue([failure(1), failure(2)])
    second = producer.enqueue([failure(1), failure(2)])
    assert [r.new for r in first] == [True] and [r.new for r in second] == [False]
    assert first[0].batch_id == second[0].batch_id
    _wait_merged(client, [first[0].batch_id])
    assert store.summary(client).episodes == 1


def test_invalid_payload_from_a_foreign_client_is_dead_lettered(
    worker: Worker, client: redis.Redis, settings: Settings
) -> None:
    sender = Celery(broker=settings.broker)
    sender.send_task(tasks.REASON_EPISODE, args=[{"failures": [failure(ndcg=3)]}],
                     queue=tasks.EPISODE_QUEUE)
    wait_until(lambda: deadletters.count(client) == 1, 30, "dead letter")
    letter = deadletters.list_all(client)[0]
    assert "failures[0].ndcg" in letter.reason
    assert store.summary(client).episodes == 0


def test_merges_are_not_stuck_behind_an_episode_backlog(
    client: redis.Redis, settings: Settings, redis_url: str
) -> None:
    # A slow reasoner and one episode thread: a backlog builds on the episode queue, and
    # each finished episode must still be merged within seconds by the merge worker.
    env = worker_env(redis_url, RIPMAP_REASONER="claude-cli",
                     RIPMAP_CLAUDE_CLI_TIMEOUT_SECONDS="30", PATH=_slow_claude_path())
    episodes = Worker(env, queues=tasks.EPISODE_QUEUE, concurrency=1, name="slow").wait_ready()
    merger = Worker(env, queues=tasks.MERGE_QUEUE, concurrency=2, name="merge").wait_ready()
    try:
        ids = [r.batch_id for r in Producer(settings).enqueue([failure(i) for i in range(30)])]
        wait_until(lambda: any(store.merged_flags(client, ids)), 30, "first merge")
        first = store.recent_episodes(client, 1)[0]
        lag = float(client.hget(keys.STATS, "last_merged_at") or 0) - first["finished_at"]
        assert sum(store.merged_flags(client, ids)) < len(ids)  # backlog still there
        assert lag < 5.0
    finally:
        episodes.kill()
        merger.stop()
        purge_broker(redis_url)


def _slow_claude_path() -> str:
    import os
    import tempfile

    folder = tempfile.mkdtemp(prefix="slow-claude-")
    script = os.path.join(folder, "claude")
    with open(script, "w") as f:
        f.write("#!/bin/sh\nsleep 0.5\nprintf '## Diagnosis\\nslow\\n## Proposed Changes\\n"
                "boost_chat_file: decrease small \"x\"\\n## Confidence\\n0.6\\n'\n")
    os.chmod(script, 0o755)
    return folder + os.pathsep + os.environ.get("PATH", "")


def _queue_len(settings: Settings, queue: str) -> int:
    broker = redis.Redis.from_url(settings.broker)
    return int(broker.llen(queue))
