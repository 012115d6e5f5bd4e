"""Each Lua script's contract, exercised through its typed wrapper on the real test Redis:
the keys it writes, what it returns, and the edge of its contract."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import time
from typing import Any

import redis

from state import keys, scripts
from tests.factories import episode, failure

SCRIPT_NAMES = {
    "MERGE_EPISODE", "CLAIM_BATCHES", "SIGHT_MISSING", "INBOX_PUT", "INBOX_DONE",
    "TOP_INSIGHTS", "STEP_CONTEXT", "EPISODE_CONTEXT", "STEP_VERSION", "PUSH_TAKE",
    "CLAIM_STALE_BATCHES", "TAKE_EVALUATION",
}
_CONTRACT_LINE = re.compile(r"^--.*\b(KEYS|ARGV)\[")


def _script_constants() -> dict[str, tuple[str, str]]:
    """Every upper-case string constant defined in a module of the package: name ->
    (module, text)."""
    found: dict[str, tuple[str, str]] = {}
    for info in pkgutil.iter_modules(scripts.__path__):
        module = importlib.import_module(f"{scripts.__name__}.{info.name}")
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, str):
                found[name] = (module.__name__, value)
    return found


def test_every_script_opens_with_its_keys_and_argv_contract() -> None:
    found = _script_constants()
    assert set(found) == SCRIPT_NAMES
    for name, (module, text) in found.items():
        assert getattr(scripts, name) is text, f"{name} is not re-exported by state.scripts"
        assert text.lstrip().startswith("--"), f"{module}.{name} does not open with a comment"
        opening = []
        for line in text.lstrip().splitlines():
            if not line.startswith("--"):
                break
            opening.append(line)
        assert any(_CONTRACT_LINE.match(line) for line in opening), \
            f"{module}.{name}'s opening comment names no KEYS[...] or ARGV[...]"


# --- merge -------------------------------------------------------------------------------

def _delta(insight: str = "h-int", signature: str = "h-sig") -> dict[str, Any]:
    return {
        "stats": {"episodes": 1, "proposals": 2},
        "stats_float": {"confidence_sum": 0.5},
        "stats_set": {"last_merged_at": "123.5"},
        "changes": [["alpha:increase", 0.5], ["beta:decrease", 0.25]],
        "insights": [[[insight, "alpha couples with beta"]], [],
                     [[signature, "the seed file dominates"]]],
    }


def _open_everywhere(client: redis.Redis, batch_id: str) -> None:
    """A batch id with a dead letter, a ledger entry (open, since, missing) and an inbox entry."""
    client.hset(keys.DEAD_LETTERS, batch_id, "{}")
    client.zadd(keys.DEAD_LETTER_ORDER, {batch_id: 1.0})
    client.hset(keys.OPEN, batch_id, "{}")
    client.zadd(keys.OPEN_SINCE, {batch_id: 1.0})
    client.zadd(keys.OPEN_MISSING, {batch_id: 1.0})
    client.hset(keys.INBOX, batch_id, "{}")


def _entries(client: redis.Redis, batch_id: str) -> list[bool]:
    return [bool(client.hexists(keys.DEAD_LETTERS, batch_id)),
            client.zscore(keys.DEAD_LETTER_ORDER, batch_id) is not None,
            bool(client.hexists(keys.OPEN, batch_id)),
            client.zscore(keys.OPEN_SINCE, batch_id) is not None,
            client.zscore(keys.OPEN_MISSING, batch_id) is not None,
            bool(client.hexists(keys.INBOX, batch_id))]


def _merge(client: redis.Redis, episode_id: str, delta: dict[str, Any], vote: tuple[int, str],
           *, log_retention: int = 100, insight_retention: int = 100) -> scripts.MergeResult:
    return scripts.merge_episode(
        client, episode_id, episode(0, episode_id=episode_id).model_dump_json(), delta, vote,
        f"batch-{episode_id}", dedupe_ttl=60, log_retention=log_retention,
        insight_retention=insight_retention)


def test_merge_episode_merges_once_and_closes_its_batch_everywhere(
    client: redis.Redis
) -> None:
    _open_everywhere(client, "batch-e1")
    _open_everywhere(client, "batch-other")
    vote = json.dumps({"episode_id": "e1"})

    first = _merge(client, "e1", _delta(), (0, vote))

    assert first == scripts.MergeResult(merged=True, pending=1, current_version=0)
    assert 0 < client.ttl(keys.merged("e1")) <= 60
    assert client.hgetall(keys.STATS) == {"episodes": "1", "proposals": "2",
                                          "confidence_sum": "0.5", "last_merged_at": "123.5"}
    assert client.hgetall(keys.CHANGES) == {"alpha:increase": "1", "beta:decrease": "1"}
    assert client.hgetall(keys.CONFIDENCE) == {"alpha:increase": "0.5",
                                               "beta:decrease": "0.25"}
    logged = client.lrange(keys.EPISODE_LOG, 0, -1)
    assert [json.loads(x)["episode_id"] for x in logged] == ["e1"]
    interactions, structural, signatures = keys.INSIGHT_KINDS
    assert client.zrange(keys.insights(interactions), 0, -1, withscores=True) == [("h-int", 1)]
    assert client.hgetall(keys.insight_text(interactions)) == {
        "h-int": "alpha couples with beta"}
    assert client.zcard(keys.insights(structural)) == 0
    assert client.zrange(keys.insights(signatures), 0, -1) == ["h-sig"]
    # the vote is keyed by the episode's merged marker, and starts the pending clock
    assert client.hgetall(keys.PENDING) == {keys.merged("e1"): vote}
    assert client.get(keys.PENDING_SINCE) is not None
    assert _entries(client, "batch-e1") == [False] * 6
    assert _entries(client, "batch-other") == [True] * 6

    # a redelivered copy was dead-lettered and re-opened meanwhile: merged wins, once
    _open_everywhere(client, "batch-e1")
    second = _merge(client, "e1", _delta(), (0, vote))

    assert second == scripts.MergeResult(merged=False, pending=1, current_version=0)
    assert client.hget(keys.STATS, "episodes") == "1"
    assert client.hget(keys.CHANGES, "alpha:increase") == "1"
    assert client.llen(keys.EPISODE_LOG) == 1
    assert client.zscore(keys.insights(interactions), "h-int") == 1
    assert _entries(client, "batch-e1") == [False] * 6
    assert _entries(client, "batch-other") == [True] * 6


def test_merge_episode_counts_a_vote_only_on_the_current_version(client: redis.Redis) -> None:
    client.set(keys.PARAMS_CURRENT, "3")

    stale = _merge(client, "old", _delta(), (2, json.dumps({"episode_id": "old"})))
    assert stale == scripts.MergeResult(merged=True, pending=0, current_version=3)
    assert client.hlen(keys.PENDING) == 0 and client.get(keys.PENDING_SINCE) is None
    # the stale vote is still evidence in the aggregates
    assert client.hget(keys.CHANGES, "alpha:increase") == "1"

    current = _merge(client, "new", _delta(), (3, json.dumps({"episode_id": "new"})))
    assert current == scripts.MergeResult(merged=True, pending=1, current_version=3)
    since = client.get(keys.PENDING_SINCE)
    assert since is not None

    silent = _merge(client, "silent", _delta(), (3, ""))
    assert silent == scripts.MergeResult(merged=True, pending=1, current_version=3)
    assert list(client.hkeys(keys.PENDING)) == [keys.merged("new")]

    time.sleep(0.01)
    later = _merge(client, "later", _delta(), (3, json.dumps({"episode_id": "later"})))
    assert later == scripts.MergeResult(merged=True, pending=2, current_version=3)
    assert client.get(keys.PENDING_SINCE) == since  # set once, by the first vote


def test_merge_episode_trims_the_log_and_the_rarest_insights(client: redis.Redis) -> None:
    kind = keys.INSIGHT_KINDS[0]
    for i in range(3):
        _merge(client, f"e{i}", _delta(insight="hot"), (0, ""), log_retention=2,
               insight_retention=10)
    assert [json.loads(x)["episode_id"] for x in client.lrange(keys.EPISODE_LOG, 0, -1)] == [
        "e2", "e1"]

    # 11 rare insights with the hot one: 12 > 10 + 10% of 10, so it trims back to 10
    rare = [[f"h{i:02d}", f"rare {i}"] for i in range(11)]
    delta = _delta()
    delta["insights"][0] = rare
    _merge(client, "many", delta, (0, ""), log_retention=2, insight_retention=10)

    zkey, tkey = keys.insights(kind), keys.insight_text(kind)
    assert client.zcard(zkey) == 10
    assert client.zscore(zkey, "hot") == 3
    # the rarest go, ties broken by member: h00 and h01, from the zset and the text hash
    assert client.zscore(zkey, "h00") is None and client.zscore(zkey, "h01") is None
    assert not client.hexists(tkey, "h00") and not client.hexists(tkey, "h01")
    assert client.hget(tkey, "h02") == "rare 2"
    assert client.hlen(tkey) == 10


# --- ledger ------------------------------------------------------------------------------

def test_claim_batches_claims_an_id_once_and_records_it_in_the_ledger(
    client: redis.Redis
) -> None:
    client.zadd(keys.OPEN_MISSING, {"b1": 1.0})
    before = time.time()

    assert scripts.claim_batches(client, [("b1", '{"n": 1}'), ("b2", '{"n": 2}')], 60) == [
        True, True]

    after = time.time()
    assert 0 < client.ttl(keys.batch_seen("b1")) <= 60
    assert 0 < client.ttl(keys.batch_seen("b2")) <= 60
    assert client.hgetall(keys.OPEN) == {"b1": '{"n": 1}', "b2": '{"n": 2}'}
    for batch_id in ("b1", "b2"):
        since = client.zscore(keys.OPEN_SINCE, batch_id)
        assert since is not None and before <= since <= after
    assert client.zscore(keys.OPEN_MISSING, "b1") is None  # a fresh send is not missing

    # claimed before: not claimed again, and its ledger entry is left as it was
    client.zadd(keys.OPEN_SINCE, {"b1": 5.0})
    assert scripts.claim_batches(client, [("b1", '{"n": "again"}'), ("b3", '{"n": 3}')],
                                 60) == [False, True]
    assert client.hget(keys.OPEN, "b1") == '{"n": 1}'
    assert client.zscore(keys.OPEN_SINCE, "b1") == 5.0
    assert client.hget(keys.OPEN, "b3") == '{"n": 3}'

    # forced (a re-send): still reported as claimed before, but recorded afresh
    client.expire(keys.batch_seen("b1"), 5)
    client.zadd(keys.OPEN_MISSING, {"b1": 1.0})
    assert scripts.claim_batches(client, [("b1", '{"n": "resent"}')], 60, force=True) == [
        False]
    assert client.ttl(keys.batch_seen("b1")) > 5
    assert client.hget(keys.OPEN, "b1") == '{"n": "resent"}'
    since = client.zscore(keys.OPEN_SINCE, "b1")
    assert since is not None and since >= before
    assert client.zscore(keys.OPEN_MISSING, "b1") is None


def test_sight_missing_confirms_only_a_second_sighting_the_interval_apart(
    client: redis.Redis
) -> None:
    client.zadd(keys.OPEN_SINCE, {"b1": 0.0, "b2": 0.0, "b3": 0.0})  # b4: merged, not open
    client.zadd(keys.OPEN_MISSING, {"b3": 50.0})

    # first sighting: recorded, none confirmed; b3 found in a queue is no longer missing
    assert scripts.sight_missing(client, ["b1", "b2", "b4"], ["b3"], 100.0, 30.0) == []
    assert client.zrange(keys.OPEN_MISSING, 0, -1, withscores=True) == [
        ("b1", 100.0), ("b2", 100.0)]

    # too soon: not confirmed, and the first sighting's time is kept
    assert scripts.sight_missing(client, ["b1", "b2"], [], 129.0, 30.0) == []
    assert client.zscore(keys.OPEN_MISSING, "b1") == 100.0

    # the interval apart: confirmed, except b2, found in a queue since
    assert scripts.sight_missing(client, ["b1", "b4"], ["b2"], 130.0, 30.0) == ["b1"]
    assert client.zscore(keys.OPEN_MISSING, "b2") is None
    assert client.zscore(keys.OPEN_MISSING, "b4") is None  # never open: never sighted


# --- inbox -------------------------------------------------------------------------------

def test_inbox_put_asks_for_a_drain_only_when_none_is_pending(client: redis.Redis) -> None:
    assert scripts.inbox_put(client, "e1", '{"id": "e1"}', 10) is True
    assert client.hgetall(keys.INBOX) == {"e1": '{"id": "e1"}'}
    assert 0 < client.ttl(keys.INBOX_DRAINING) <= 10

    client.expire(keys.INBOX_DRAINING, 3)
    assert scripts.inbox_put(client, "e2", '{"id": "e2"}', 10) is False
    assert client.hgetall(keys.INBOX) == {"e1": '{"id": "e1"}', "e2": '{"id": "e2"}'}
    assert client.ttl(keys.INBOX_DRAINING) <= 3  # the pending drain's flag is left alone

    client.delete(keys.INBOX_DRAINING)  # the drain ended
    assert scripts.inbox_put(client, "e3", '{"id": "e3"}', 10) is True
    assert client.hlen(keys.INBOX) == 3


def test_inbox_done_clears_the_flag_only_when_the_inbox_is_empty(client: redis.Redis) -> None:
    client.hset(keys.INBOX, "e1", "{}")
    client.set(keys.INBOX_DRAINING, "1", ex=3)

    assert scripts.inbox_done(client, 30) is False
    assert 3 < client.ttl(keys.INBOX_DRAINING) <= 30  # renewed for the drain going on
    assert client.hlen(keys.INBOX) == 1

    client.hdel(keys.INBOX, "e1")
    assert scripts.inbox_done(client, 30) is True
    assert client.exists(keys.INBOX_DRAINING) == 0
    assert scripts.inbox_done(client, 30) is True  # no flag: nothing to clear


# --- context -----------------------------------------------------------------------------

def _write_insights(client: redis.Redis) -> None:
    interactions, structural, _ = keys.INSIGHT_KINDS
    client.zadd(keys.insights(interactions), {"h1": 3, "h2": 5, "h3": 1})
    client.hset(keys.insight_text(interactions),
                mapping={"h1": "alpha", "h2": "beta", "h3": "gamma"})
    client.zadd(keys.insights(structural), {"h4": 2})  # no text: the hash stands in


def test_top_insights_returns_the_most_frequent_of_each_kind_with_text(
    client: redis.Redis
) -> None:
    _write_insights(client)
    pipe = client.pipeline()
    pipe.get("unrelated")
    scripts.queue_top_insights(pipe, 2)
    unrelated, raw = pipe.execute()

    assert unrelated is None
    interactions, structural, signatures = keys.INSIGHT_KINDS
    assert scripts.parse_top_insights(raw) == {
        interactions: [("beta", 5), ("alpha", 3)],
        structural: [("h4", 2)],
        signatures: [],
    }


def test_step_context_returns_version_params_and_votes(client: redis.Redis) -> None:
    assert scripts.step_context(client) == (0, {}, [])

    client.set(keys.PARAMS_CURRENT, "4")
    client.hset(keys.PARAMS, mapping={"alpha": "0.5", "beta": "2.0"})
    client.hset(keys.PENDING, mapping={"m1": '{"v": 1}', "m2": '{"v": 2}'})
    version, params, votes = scripts.step_context(client)

    assert version == 4
    assert params == {"alpha": "0.5", "beta": "2.0"}
    assert sorted(votes) == ['{"v": 1}', '{"v": 2}']


def test_episode_context_returns_what_was_written_and_closes_a_merged_batch(
    client: redis.Redis
) -> None:
    client.set(keys.PARAMS_CURRENT, "2")
    client.hset(keys.PARAMS, mapping={"alpha": "0.5"})
    client.hset(keys.PENDING, "m1", '{"v": 1}')
    client.hset(keys.VERSION_BRIEFS, mapping={"2": '{"b": 2}', "1": '{"b": 1}'})
    client.hset(keys.EVALS, mapping={"2:cases": "3", "2:sum": "1.5", "1:cases": "1"})
    _write_insights(client)
    client.hset(keys.OPEN, "ep1", "{}")
    client.zadd(keys.OPEN_SINCE, {"ep1": 1.0})
    client.zadd(keys.OPEN_MISSING, {"ep1": 1.0})

    context = scripts.episode_context(client, "ep1", 1, 5)

    interactions, structural, signatures = keys.INSIGHT_KINDS
    assert context == scripts.EpisodeContext(
        merged=False, version=2, params={"alpha": "0.5"}, votes=['{"v": 1}'],
        # five versions asked for, three exist: newest first, down to version 0
        trajectory=[(2, '{"b": 2}', 3, 1.5), (1, '{"b": 1}', 1, 0.0), (0, "", 0, 0.0)],
        knowledge={interactions: [("beta", 5)], structural: [("h4", 2)], signatures: []})
    assert client.hexists(keys.OPEN, "ep1")  # not merged: the ledger still watches it
    assert [row[0] for row in scripts.episode_context(client, "ep1", 1, 2).trajectory] == [
        2, 1]

    # merged already: the copy sent again closes its ledger entry
    client.set(keys.merged("ep1"), "1")
    assert scripts.episode_context(client, "ep1", 1, 1).merged is True
    assert not client.hexists(keys.OPEN, "ep1")
    assert client.zscore(keys.OPEN_SINCE, "ep1") is None
    assert client.zscore(keys.OPEN_MISSING, "ep1") is None


# --- versions ----------------------------------------------------------------------------

def _record(number: int) -> tuple[int, str, str]:
    return number, json.dumps({"version": number}), json.dumps({"parent": number - 1})


def test_step_version_creates_exactly_one_version_per_compare_and_set(
    client: redis.Redis
) -> None:
    client.hset(keys.PENDING, mapping={"m1": "{}", "m2": "{}"})
    client.set(keys.PENDING_SINCE, "10.0")

    # the pending votes changed between the read and the call: retry, nothing written
    assert scripts.step_version(client, 0, 3, _record(1), {"alpha": 0.5}, 5) == -1
    assert client.get(keys.PARAMS_CURRENT) is None
    assert client.exists(keys.param_version(1)) == 0
    assert client.hlen(keys.PENDING) == 2

    assert scripts.step_version(client, 0, 2, _record(1), {"alpha": 0.5, "beta": 2.0}, 5) == 1
    assert client.get(keys.PARAMS_CURRENT) == "1"
    assert client.get(keys.PARAMS_SEQ) == "1"
    assert client.get(keys.param_version(1)) == json.dumps({"version": 1})
    assert client.hgetall(keys.VERSION_BRIEFS) == {"1": json.dumps({"parent": 0})}
    assert client.hgetall(keys.PARAMS) == {"alpha": "0.5", "beta": "2.0"}
    assert client.exists(keys.PENDING, keys.PENDING_SINCE) == 0

    # a second step from the same read: the current version moved, another step won
    assert scripts.step_version(client, 0, 0, _record(1), {"alpha": 9.0}, 5) == 0
    assert scripts.step_version(client, 0, -1, _record(2), {"alpha": 9.0}, 5) == 0
    assert client.get(keys.PARAMS_CURRENT) == "1"
    assert client.exists(keys.param_version(2)) == 0
    assert client.hget(keys.PARAMS, "alpha") == "0.5"

    # -1 pending: not checked; a number that skips the sequence: retry
    client.hset(keys.PENDING, "m3", "{}")
    assert scripts.step_version(client, 1, -1, _record(3), {"alpha": 1.0}, 5) == -1
    assert scripts.step_version(client, 1, -1, _record(2), {"alpha": 1.0}, 5) == 1
    assert client.get(keys.PARAMS_CURRENT) == "2"
    assert client.get(keys.PARAMS_SEQ) == "2"


def test_step_version_drops_the_version_leaving_retention_unless_best(
    client: redis.Redis
) -> None:
    def evidence(v: int) -> None:
        client.zadd(keys.SCORES, {str(v): 0.5})
        client.hset(keys.EVALS, mapping={f"{v}:cases": "2", f"{v}:sum": "1.0",
                                         f"{v}:sumsq": "0.5"})

    for n in (1, 2):
        assert scripts.step_version(client, n - 1, -1, _record(n), {"alpha": n}, 2) == 1
        evidence(n)
    client.set(keys.PARAMS_BEST, "2")

    assert scripts.step_version(client, 2, -1, _record(3), {"alpha": 3.0}, 2) == 1
    assert client.exists(keys.param_version(1)) == 0
    assert not client.hexists(keys.VERSION_BRIEFS, "1")
    assert client.zscore(keys.SCORES, "1") is None
    assert not any(f.startswith("1:") for f in client.hkeys(keys.EVALS))

    # version 2 leaves retention next, but it is the best: kept with its evidence
    assert scripts.step_version(client, 3, -1, _record(4), {"alpha": 4.0}, 2) == 1
    assert client.get(keys.param_version(2)) == json.dumps({"version": 2})
    assert client.hexists(keys.VERSION_BRIEFS, "2")
    assert client.zscore(keys.SCORES, "2") == 0.5
    assert client.hget(keys.EVALS, "2:cases") == "2"
    assert sorted(client.hkeys(keys.VERSION_BRIEFS)) == ["2", "3", "4"]


# --- push --------------------------------------------------------------------------------

def _items(*ids: int) -> list[str]:
    return [json.dumps(failure(i)) for i in ids]


def _batch(*ids: int) -> str:
    return '{"failures":[' + ",".join(_items(*ids)) + "]}"


def test_push_take_moves_full_batches_to_pending_and_flushes_a_due_partial(
    client: redis.Redis
) -> None:
    buffer = keys.push_buffer("r")

    assert scripts.push_take(client, "r", _items(1), batch_size=2, now=10.0) == (0, [])
    assert client.lrange(buffer, 0, -1) == _items(1)
    assert client.zscore(keys.PUSH_REPOS, "r") == 10.0

    taken = scripts.push_take(client, "r", _items(2, 3), batch_size=2, now=20.0)
    assert taken == (1, [("1", _batch(1, 2))])
    assert json.loads(taken[1][0][1]) == {"failures": [failure(1), failure(2)]}
    assert client.lrange(buffer, 0, -1) == _items(3)
    assert client.hgetall(keys.PUSH_PENDING) == {"1": _batch(1, 2)}
    assert client.zscore(keys.PUSH_PENDING_ORDER, "1") == 20.0
    # every failure still buffered arrived with this call: the repo's oldest is now
    assert client.zscore(keys.PUSH_REPOS, "r") == 20.0

    # flushing: the partial rest is taken only once its oldest arrival is at the cutoff
    assert scripts.push_take(client, "r", [], batch_size=2, now=30.0, flush_cutoff=19.0) == (
        1, [])
    assert client.llen(buffer) == 1
    assert scripts.push_take(client, "r", [], batch_size=2, now=30.0, flush_cutoff=20.0) == (
        1, [("2", _batch(3))])
    assert client.llen(buffer) == 0
    assert client.zscore(keys.PUSH_REPOS, "r") is None
    assert client.get(keys.PUSH_SEQ) == "2"
    assert client.zscore(keys.PUSH_PENDING_ORDER, "2") == 30.0


def test_push_take_keeps_the_oldest_arrival_and_queues_on_a_pipeline(
    client: redis.Redis
) -> None:
    scripts.push_take(client, "r", _items(1), batch_size=3, now=10.0)
    assert scripts.push_take(client, "r", _items(2), batch_size=3, now=20.0) == (1, [])
    assert client.zscore(keys.PUSH_REPOS, "r") == 10.0  # failure 1 still waits since 10

    pipe = client.pipeline()
    scripts.queue_push_take(pipe, "r", _items(3), batch_size=3, now=30.0)
    scripts.queue_push_take(pipe, "s", _items(4), batch_size=3, now=30.0)
    assert [scripts.parse_taken(raw) for raw in pipe.execute()] == [
        (2, [("1", _batch(1, 2, 3))]), (0, [])]
    assert client.zscore(keys.PUSH_REPOS, "r") is None
    assert client.zscore(keys.PUSH_REPOS, "s") == 30.0


def test_claim_stale_batches_claims_each_stale_batch_once_and_restamps_it(
    client: redis.Redis
) -> None:
    client.hset(keys.PUSH_PENDING, mapping={"t1": "B1", "t2": "B2", "t3": "B3"})
    # t4 was confirmed sent (gone from the hash) but its order entry stayed behind
    client.zadd(keys.PUSH_PENDING_ORDER, {"t4": 5.0, "t1": 10.0, "t2": 20.0, "t3": 50.0})

    assert scripts.claim_stale_batches(client, 30.0, 100.0, 10) == [("t1", "B1"), ("t2", "B2")]
    assert client.zrange(keys.PUSH_PENDING_ORDER, 0, -1, withscores=True) == [
        ("t3", 50.0), ("t1", 100.0), ("t2", 100.0)]
    assert client.hlen(keys.PUSH_PENDING) == 3  # claimed, not removed: sent, then confirmed

    # re-stamped: a concurrent flusher with the same cutoff claims none of them
    assert scripts.claim_stale_batches(client, 30.0, 101.0, 10) == []
    # at most ``limit``, oldest first
    assert scripts.claim_stale_batches(client, 200.0, 300.0, 1) == [("t3", "B3")]
    assert client.zscore(keys.PUSH_PENDING_ORDER, "t3") == 300.0
    assert client.zscore(keys.PUSH_PENDING_ORDER, "t1") == 100.0


def test_take_evaluation_spends_a_budget_down_to_zero_and_never_below(
    client: redis.Redis,
) -> None:
    assert all(scripts.take_evaluation(client, "free") for _ in range(3))
    assert not client.exists(keys.eval_budget("free"))  # no budget: nothing written
    client.set(keys.eval_budget("capped"), 2)
    taken = [scripts.take_evaluation(client, "capped") for _ in range(4)]
    assert taken == [True, True, False, False]
    assert client.get(keys.eval_budget("capped")) == "0"
