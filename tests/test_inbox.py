"""The reducer's inbox: every episode put is merged once, and no drain is left pending or
missing, whatever the interleaving of puts and drains."""

from __future__ import annotations

import threading

import redis

from schemas.settings import Settings
from state import deadletters, inbox, keys, store
from tests.factories import episode
from worker import drain


def test_first_put_asks_for_a_drain_and_the_drain_merges_everything(
    client: redis.Redis, settings: Settings
) -> None:
    assert [inbox.put(client, episode(i)) for i in range(5)] == [True] + [False] * 4
    report = drain.drain(client, settings)
    assert (report.merged, report.duplicates, report.more) == (5, 0, False)
    assert client.hlen(keys.INBOX) == 0 and not client.exists(keys.INBOX_DRAINING)
    assert store.merged_flags(client, [f"ep{i}" for i in range(5)]) == [True] * 5
    assert inbox.put(client, episode(9))  # the next episode asks for a new drain


def test_a_copy_of_a_merged_episode_is_removed_without_effect(
    client: redis.Redis, settings: Settings
) -> None:
    inbox.put(client, episode(1))
    drain.drain(client, settings)
    before = client.hgetall(keys.STATS)
    inbox.put(client, episode(1))
    report = drain.drain(client, settings)
    assert (report.merged, report.duplicates) == (0, 1)
    assert client.hgetall(keys.STATS) == before and client.hlen(keys.INBOX) == 0


def test_a_drain_out_of_time_hands_over_and_keeps_the_flag(
    client: redis.Redis, settings: Settings
) -> None:
    inbox.put(client, episode(1))
    report = drain.drain(client, settings, seconds=0)
    assert report.more and report.merged == 0
    assert client.exists(keys.INBOX_DRAINING) and client.hlen(keys.INBOX) == 1


def test_an_invalid_entry_is_dead_lettered_not_retried(
    client: redis.Redis, settings: Settings
) -> None:
    client.hset(keys.INBOX, "bad", '{"episode_id": "bad"}')
    report = drain.drain(client, settings)
    assert report.dead_lettered == 1 and client.hlen(keys.INBOX) == 0
    letter = deadletters.get(client, "bad")
    assert letter is not None and "invalid episode" in letter.reason


def test_kick_sends_a_drain_only_for_waiting_episodes_without_one(
    client: redis.Redis, settings: Settings
) -> None:
    assert not inbox.kick(client)  # nothing waits
    inbox.put(client, episode(1))
    assert not inbox.kick(client)  # a drain is pending
    inbox.release(client)  # its send failed
    assert inbox.kick(client)


def test_concurrent_puts_and_drains_merge_everything_once(
    client: redis.Redis, settings: Settings
) -> None:
    """Eight putters; each put that asks for a drain starts one, as the task would."""
    drains: list[threading.Thread] = []
    lock = threading.Lock()

    def putter(k: int) -> None:
        for i in range(k * 40, k * 40 + 40):
            if inbox.put(client, episode(i)):
                t = threading.Thread(target=drain.drain, args=(client, settings))
                with lock:
                    drains.append(t)
                t.start()

    putters = [threading.Thread(target=putter, args=(k,)) for k in range(8)]
    for t in putters:
        t.start()
    for t in putters:
        t.join()
    while True:
        with lock:
            pending = [t for t in drains if t.is_alive()]
        if not pending:
            break
        for t in pending:
            t.join()
    ids = [f"ep{i}" for i in range(320)]
    assert all(store.merged_flags(client, ids))
    assert client.hlen(keys.INBOX) == 0 and not client.exists(keys.INBOX_DRAINING)
    assert client.llen(keys.EPISODE_LOG) == 320 and len(drains) >= 1
