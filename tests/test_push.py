"""Streaming push: per-repository buffers, atomic batch takes, the flusher, crash recovery.

Batches are sent to a broker database no worker consumes, so every enqueued message can
be read back and checked.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from ops.embedded import free_port
from producer.api import InvalidInput
from producer.push import Pusher
from schemas import tasks
from schemas.settings import Settings
from state import keys, scripts, store
from tests.factories import failure
from tests.services import ROOT, database, wait_until, worker_env

REPOS = ["alpha", "beta", "gamma"]


def idle_broker_url(redis_url: str) -> str:
    """Database 2 of the test server: a broker no worker consumes."""
    return database(redis_url, 2)


@pytest.fixture
def broker(redis_url: str) -> Iterator[redis.Redis]:
    b = redis.Redis.from_url(idle_broker_url(redis_url))
    b.flushdb()
    yield b
    b.flushdb()


@pytest.fixture
def push_settings(settings: Settings, redis_url: str, client: redis.Redis) -> Settings:
    return settings.model_copy(update={"broker_url": idle_broker_url(redis_url)})


def pusher_for(settings: Settings, **overrides: Any) -> Pusher:
    return Pusher(settings.model_copy(update=overrides))


def sent(broker: redis.Redis) -> list[dict[str, Any]]:
    """Every reason_episode message on the idle broker, oldest first, as its batch."""
    out = []
    for raw in reversed(broker.lrange(tasks.EPISODE_QUEUE, 0, -1)):
        envelope = json.loads(raw)
        assert envelope["headers"]["task"] == tasks.REASON_EPISODE
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        out.append(args[0])
    return out


def queries(batch: dict[str, Any]) -> list[str]:
    return [f["query"] for f in batch["failures"]]


def test_a_full_buffer_is_enqueued_as_one_batch_and_receipts_say_where(
    push_settings: Settings, client: redis.Redis, broker: redis.Redis
) -> None:
    pusher = pusher_for(push_settings, batch_size=5)
    receipts = [pusher.push(failure(i)) for i in range(7)]
    assert [(r.state, r.position) for r in receipts[:4]] == [("buffered", p) for p in (1, 2, 3, 4)]
    assert receipts[4].state == "enqueued" and receipts[4].batch_id
    assert [(r.state, r.position) for r in receipts[5:]] == [("buffered", 1), ("buffered", 2)]
    assert [queries(b) for b in sent(broker)] == [[failure(i)["query"] for i in range(5)]]
    assert store.push_backlog(client) == ({"example-app": 2}, 0)


def test_bad_failures_are_rejected_naming_the_field_and_nothing_is_pushed(
    push_settings: Settings, client: redis.Redis, broker: redis.Redis
) -> None:
    pusher = pusher_for(push_settings)
    with pytest.raises(InvalidInput) as one:
        pusher.push(failure(1, ndcg=1.7))
    assert one.value.problems[0].startswith("ndcg:")
    with pytest.raises(InvalidInput) as many:
        pusher.push_many([failure(i) for i in range(4)] + [failure(9, expected_top=[])])
    assert [p.split(":")[0] for p in many.value.problems] == ["record 4"]
    assert "expected_top" in many.value.problems[0]
    assert store.push_backlog(client) == ({}, 0) and sent(broker) == []


def test_a_list_over_several_repositories_is_batched_per_repository(
    push_settings: Settings, client: redis.Redis, broker: redis.Redis
) -> None:
    pusher = pusher_for(push_settings, batch_size=2)
    records = [failure(i, repo_context={"name": REPOS[i % 2]}) for i in range(5)]
    receipts = pusher.push_many(records)
    assert [r.repo for r in receipts] == [REPOS[i % 2] for i in range(5)]
    assert [r.state for r in receipts] == ["enqueued"] * 4 + ["buffered"]
    assert receipts[0].batch_id == receipts[2].batch_id != receipts[1].batch_id
    assert sorted(queries(b) for b in sent(broker)) == [
        [records[0]["query"], records[2]["query"]], [records[1]["query"], records[3]["query"]]]
    assert store.push_backlog(client) == ({"alpha": 1}, 0)


def test_a_partial_batch_is_flushed_only_after_waiting(
    push_settings: Settings, client: redis.Redis, broker: redis.Redis
) -> None:
    pusher = pusher_for(push_settings, batch_size=5, push_max_wait_seconds=10)
    pushed_at = time.time()
    pusher.push(failure(1))
    pusher.push(failure(2))
    assert pusher.flush(now=pushed_at + 1).batches == [] and sent(broker) == []
    report = pusher.flush(now=pushed_at + 5.5)  # the flusher takes what waited half the max
    assert len(report.batches) == 1
    assert [queries(b) for b in sent(broker)] == [[failure(1)["query"], failure(2)["query"]]]
    assert store.push_backlog(client) == ({}, 0)
    assert pusher.flush(now=pushed_at + 60).batches == []


def test_a_batch_taken_by_a_pusher_that_died_is_resent_by_the_flusher(
    push_settings: Settings, client: redis.Redis, broker: redis.Redis
) -> None:
    pusher = pusher_for(push_settings, batch_size=2, push_resend_after_seconds=60)
    taken_at = time.time()
    # what a pusher does before it dies: the atomic take, and no enqueue
    items = [json.dumps(failure(i)) for i in (1, 2)]
    _, taken = scripts.push_take(client, "example-app", items, batch_size=2, now=taken_at)
    assert len(taken) == 1 and store.push_backlog(client) == ({}, 1)
    assert pusher.flush(now=taken_at + 30).resent == []
    report = pusher.flush(now=taken_at + 61)
    assert len(report.resent) == 1
    assert [queries(b) for b in sent(broker)] == [[failure(1)["query"], failure(2)["query"]]]
    assert store.push_backlog(client) == ({}, 0)
    assert pusher.flush(now=taken_at + 200).resent == []  # re-sent once, then forgotten


def test_a_failed_enqueue_leaves_the_batch_pending_for_the_flusher(
    push_settings: Settings, client: redis.Redis, broker: redis.Redis
) -> None:
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    cut_off = pusher_for(push_settings, batch_size=2, broker_url=dead_broker)
    receipts = [cut_off.push(failure(i)) for i in (1, 2)]
    assert receipts[1].state == "pending" and receipts[1].batch_id
    assert store.push_backlog(client) == ({}, 1) and sent(broker) == []
    report = pusher_for(push_settings).flush(now=time.time() + 3_600)
    assert report.resent == [receipts[1].batch_id]
    assert [queries(b) for b in sent(broker)] == [[failure(1)["query"], failure(2)["query"]]]


def test_a_push_filling_many_batches_enqueues_each_exactly_once(
    push_settings: Settings, client: redis.Redis, broker: redis.Redis
) -> None:
    pusher = pusher_for(push_settings, batch_size=2)
    # 14, 14 and 13 failures: 20 full batches in one call, and one failure left over
    records = [failure(i, repo_context={"name": REPOS[i % 3]}) for i in range(41)]
    receipts = pusher.push_many(records)
    enqueued = [r for r in receipts if r.state == "enqueued"]
    ids = list(dict.fromkeys(r.batch_id or "" for r in enqueued))
    assert len(enqueued) == 40 and len(ids) == 20 and "" not in ids
    assert [(r.repo, r.state, r.position) for r in receipts if r.state != "enqueued"] == [
        ("gamma", "buffered", 1)]
    batches = sent(broker)
    assert broker.llen(tasks.EPISODE_QUEUE) == len(batches) == 20
    by_query = {rec["query"]: r.batch_id for r, rec in zip(receipts, records, strict=True)}
    for batch in batches:  # each batch once, holding exactly the failures its receipts name
        assert len(batch["failures"]) == 2
        assert len({by_query[q] for q in queries(batch)}) == 1
    assert sorted(client.hkeys(keys.OPEN)) == sorted(ids)  # the ledger: each batch once
    assert store.push_backlog(client) == ({"gamma": 1}, 0)


def test_a_flush_over_many_repositories_enqueues_their_partial_batches_together(
    push_settings: Settings, client: redis.Redis, broker: redis.Redis
) -> None:
    pusher = pusher_for(push_settings, batch_size=5)
    pusher.push_many([failure(i, repo_context={"name": repo}) for i, repo in enumerate(REPOS)])
    report = pusher.flush(everything=True)
    assert len(report.batches) == 3 and report.failed == 0
    assert sorted(b["failures"][0]["repo_context"]["name"] for b in sent(broker)) == REPOS
    assert store.push_backlog(client) == ({}, 0)


def test_a_failed_group_enqueue_leaves_all_its_batches_pending_for_the_flusher(
    push_settings: Settings, client: redis.Redis, broker: redis.Redis
) -> None:
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    cut_off = pusher_for(push_settings, batch_size=2, broker_url=dead_broker)
    records = [failure(i, repo_context={"name": REPOS[i % 2]}) for i in range(9)]
    receipts = cut_off.push_many(records)
    pending = list(dict.fromkeys(r.batch_id or "" for r in receipts if r.state == "pending"))
    assert [r.state for r in receipts] == ["pending"] * 8 + ["buffered"]
    assert len(pending) == 4 and "" not in pending
    assert store.push_backlog(client) == ({REPOS[0]: 1}, 4) and sent(broker) == []

    working = pusher_for(push_settings, batch_size=2)
    report = working.flush(now=time.time() + 3_600)  # past the resend delay, and the wait
    assert sorted(report.resent) == sorted(pending) and report.failed == 0
    resent = [b for b in sent(broker) if len(b["failures"]) == 2]
    assert len(resent) == 4
    assert Counter(q for b in resent for q in queries(b)) == Counter(
        r["query"] for r in records[:8])
    assert store.push_backlog(client) == ({}, 0)
    assert working.flush(now=time.time() + 7_200).resent == []  # re-sent once


# --- concurrency -----------------------------------------------------------------------

Op = tuple[int, int]  # (first repository, how many failures: 0 flushes, >1 push_many)
Plan = list[list[Op]]


def plans(pushers: int | tuple[int, int], ops: tuple[int, int]) -> st.SearchStrategy[Plan]:
    """Per pusher, a list of ops: mostly single pushes, some lists, some flushes."""
    low, high = (pushers, pushers) if isinstance(pushers, int) else pushers
    count = st.sampled_from([0, 1, 1, 1, 1, 1, 2, 3, 7])
    op = st.tuples(st.integers(0, len(REPOS) - 1), count)
    return st.lists(st.lists(op, min_size=ops[0], max_size=ops[1]),
                    min_size=low, max_size=high)


def run_plan(settings: Settings, worker_no: int, ops: list[Op]) -> list[str]:
    """One pusher's ops; returns the queries it pushed. A list spans repositories."""
    pusher = Pusher(settings)
    pushed: list[str] = []
    try:
        for n, (repo, count) in enumerate(ops):
            if count == 0:
                pusher.flush(everything=True)
                continue
            records = [failure(k, query=f"w{worker_no}-{n}-{k}",
                               repo_context={"name": REPOS[(repo + k // 2) % len(REPOS)]})
                       for k in range(count)]
            if count == 1:
                pusher.push(records[0])
            else:
                pusher.push_many(records)
            pushed += [r["query"] for r in records]
    finally:
        pusher.close()
    return pushed


def check_batches(settings: Settings, broker: redis.Redis, client: redis.Redis,
                  pushed: list[str]) -> None:
    """Every pushed failure in exactly one batch; no batch over the size or across repos."""
    Pusher(settings).flush(everything=True)  # what is still buffered at the end
    batches = sent(broker)
    assert all(1 <= len(b["failures"]) <= settings.batch_size for b in batches)
    assert all(len({f["repo_context"]["name"] for f in b["failures"]}) == 1 for b in batches)
    counts = Counter(q for b in batches for q in queries(b))
    assert counts == Counter(pushed), "lost or duplicated failures"
    assert store.push_backlog(client) == ({}, 0)


@hsettings(max_examples=15, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=plans((2, 6), (1, 12)), batch_size=st.integers(1, 5))
def test_concurrent_threads_never_lose_duplicate_or_overfill(
    plan: Plan, batch_size: int, push_settings: Settings, client: redis.Redis,
    broker: redis.Redis,
) -> None:
    client.flushdb()
    broker.flushdb()
    settings = push_settings.model_copy(update={"batch_size": batch_size})
    results: list[list[str]] = [[] for _ in plan]
    start = threading.Barrier(len(plan))

    def run(k: int) -> None:
        start.wait()
        results[k] = run_plan(settings, k, plan[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(plan))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check_batches(settings, broker, client, [q for r in results for q in r])


def _run_plan_in_process(job: tuple[str, str, int, int, list[Op]]) -> list[str]:
    state_url, broker_url, batch_size, worker_no, ops = job
    settings = Settings(redis_url=state_url, broker_url=broker_url, batch_size=batch_size)
    return run_plan(settings, worker_no, ops)


@pytest.fixture(scope="module")
def pool() -> Iterator[Any]:
    with multiprocessing.get_context("spawn").Pool(3) as p:
        yield p


@hsettings(max_examples=4, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=plans(3, (20, 40)), batch_size=st.integers(2, 5))
def test_concurrent_processes_never_lose_duplicate_or_overfill(
    plan: Plan, batch_size: int, pool: Any, push_settings: Settings, client: redis.Redis,
    broker: redis.Redis,
) -> None:
    client.flushdb()
    broker.flushdb()
    settings = push_settings.model_copy(update={"batch_size": batch_size})
    jobs = [(settings.state_url, settings.broker, batch_size, k, ops)
            for k, ops in enumerate(plan)]
    results = pool.map(_run_plan_in_process, jobs)
    check_batches(settings, broker, client, [q for r in results for q in r])


# --- the CLI ---------------------------------------------------------------------------


def cli_push(redis_url: str, *args: str) -> subprocess.Popen[bytes]:
    env = worker_env(redis_url, RIPMAP_BROKER_URL=idle_broker_url(redis_url),
                     RIPMAP_BATCH_SIZE="2")
    return subprocess.Popen([sys.executable, "-m", "ops.cli", "push", *args], env=env,
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def test_cli_push_streams_each_line_and_skips_bad_ones(
    client: redis.Redis, broker: redis.Redis, redis_url: str
) -> None:
    proc = cli_push(redis_url)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(failure(1)).encode() + b"\n")
    proc.stdin.flush()
    # pushed while the input is still open: streaming, not read-all-then-push
    wait_until(lambda: store.push_backlog(client)[0] == {"example-app": 1}, 60,
               "the first line to be pushed")
    rest = [b"{not json", json.dumps(failure(2, ndcg=1.7)).encode(),
            json.dumps(failure(3)).encode(), b"", json.dumps(failure(4)).encode()]
    _, errors = proc.communicate(b"\n".join(rest) + b"\n", timeout=60)
    text = errors.decode()
    assert proc.returncode == 2, text
    assert "line 2: malformed JSON" in text and "line 3: ndcg" in text
    # the good lines around the bad ones: 1 and 3 made a batch, 4 waits for the flusher
    assert [queries(b) for b in sent(broker)] == [[failure(1)["query"], failure(3)["query"]]]
    assert store.push_backlog(client) == ({"example-app": 1}, 0)

    flush = cli_push(redis_url, "--flush")
    flush.communicate(b"", timeout=60)
    assert flush.returncode == 0
    assert queries(sent(broker)[-1]) == [failure(4)["query"]]
    assert store.push_backlog(client) == ({}, 0)


def test_cli_push_enqueues_each_batch_of_a_large_input_once(
    client: redis.Redis, broker: redis.Redis, redis_url: str
) -> None:
    # written at once: read in large chunks (the pipe is widened), many batches per chunk
    records = [failure(i, repo_context={"name": REPOS[i % 3]}) for i in range(3_001)]
    proc = cli_push(redis_url)
    output, errors = proc.communicate(b"".join(json.dumps(r).encode() + b"\n" for r in records),
                                      timeout=120)
    assert proc.returncode == 0, errors.decode()
    assert b"3001 failures pushed, 1500 batches enqueued" in output
    batches = sent(broker)
    assert len(batches) == broker.llen(tasks.EPISODE_QUEUE) == 1_500
    # every failure once, but the last of alpha's 1,001, still buffered
    assert Counter(q for b in batches for q in queries(b)) == Counter(
        r["query"] for r in records[:3_000])
    assert store.push_backlog(client) == ({"alpha": 1}, 0)
