"""Bad input to the producer API: a clear error naming record and field, nothing enqueued."""

import pytest
import redis

from producer.api import InvalidInput, Producer
from schemas.settings import Settings
from state import store
from tests.factories import failure
from tests.services import Worker, broker_url, wait_until


def _nothing_enqueued(client: redis.Redis, redis_url: str) -> bool:
    broker = redis.Redis.from_url(broker_url(redis_url))
    return broker.llen("episodes") == 0 and not list(client.scan_iter("ripmap:batch:*"))


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ([failure(0), failure(1, ndcg=1.7)], "record 1: ndcg"),
        ([failure(0, expected_top=[])], "record 0: expected_top"),
        ([failure(0, surprise=True)], "record 0: surprise"),
        ([failure(0, commit_message="x" * 10_000_000)], "record 0: commit_message"),
        ([failure(0, ndcg="high")], "record 0: ndcg"),
        ([failure(0), "not an object"], "record 1"),
        ([], "no failures given"),
    ],
)
def test_bad_records_enqueue_nothing(
    records: list, expected: str, settings: Settings, client: redis.Redis, redis_url: str
) -> None:
    producer = Producer(settings)
    with pytest.raises(InvalidInput) as exc:
        # good records after the bad one: none of them may be enqueued either
        producer.enqueue([*records, *[failure(i + 10) for i in range(7)]] if records else [])
    assert any(p.startswith(expected) for p in exc.value.problems), exc.value.problems
    assert _nothing_enqueued(client, redis_url)


def test_good_records_are_batched_by_configured_size(
    worker: Worker, settings: Settings, client: redis.Redis
) -> None:
    producer = Producer(settings.model_copy(update={"batch_size": 3}))
    results = producer.enqueue([failure(i) for i in range(7)])
    assert len(results) == 3 and all(r.new for r in results)
    ids = [r.batch_id for r in results]
    wait_until(lambda: all(store.merged_flags(client, ids)), 60, "3 merges")
    assert sorted(e["failure_count"] for e in store.recent_episodes(client, 10)) == [1, 3, 3]
