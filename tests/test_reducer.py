import multiprocessing
import threading

import pytest
import redis

from schemas.params import PARAM_SPECS
from schemas.settings import Settings
from state import keys, store, versions
from tests.factories import episode
from worker import reducer


def test_merge_counts_once_and_redelivery_changes_nothing(client: redis.Redis,
                                                           settings: Settings) -> None:
    settings = settings.model_copy(update={"consensus_quorum": 1})
    ep = episode(1)
    assert reducer.merge(client, ep, settings) is True
    before = _dump(client)
    assert reducer.merge(client, ep, settings) is False
    assert _dump(client) == before
    summary = store.summary(client)
    assert summary.episodes == 1 and summary.proposals == 1
    assert summary.params.depth_weight_root == pytest.approx(1 / 1.1)


def test_recurring_insights_are_counted_not_appended(client: redis.Redis,
                                                     settings: Settings) -> None:
    wordings = ["Low alpha + high chat boost = tunnel vision",
                "- low alpha + high chat boost = tunnel vision.",
                "  LOW ALPHA + HIGH CHAT BOOST = TUNNEL VISION  "]
    for i, text in enumerate(wordings):
        reducer.merge(client, episode(i, answer={"param_interactions": [text, text]}), settings)
    top = store.summary(client).interactions
    assert [(i.text, i.count) for i in top] == [(wordings[0], 3)]


def test_decrease_large_halves_and_never_zeroes(client: redis.Redis, settings: Settings) -> None:
    # many steps without evaluations: the trust region is not under test here
    settings = settings.model_copy(update={"consensus_quorum": 1, "max_unevaluated_steps": 1_000})
    change = {"param": "depth_weight_vendor", "direction": "decrease", "magnitude": "large"}
    for i in range(40):
        reducer.merge(client, episode(i, answer={"proposed_changes": [change], "confidence": 0.9},
                                      params_version=versions.current_number(client)), settings)
    value = store.get_params(client).depth_weight_vendor
    assert value == PARAM_SPECS["depth_weight_vendor"].floor > 0


def test_alpha_stays_inside_open_unit_interval(client: redis.Redis, settings: Settings) -> None:
    settings = settings.model_copy(update={"consensus_quorum": 1})
    change = {"param": "pagerank_alpha", "direction": "increase", "magnitude": "large"}
    for i in range(10):
        reducer.merge(client, episode(i, answer={"proposed_changes": [change]},
                                      params_version=versions.current_number(client)), settings)
    assert 0 < store.get_params(client).pagerank_alpha < 1


def test_low_confidence_is_counted_but_not_applied(client: redis.Redis,
                                                   settings: Settings) -> None:
    settings = settings.model_copy(update={"consensus_quorum": 1})
    change = {"param": "boost_chat_file", "direction": "increase", "magnitude": "large"}
    reducer.merge(client, episode(1, answer={"proposed_changes": [change], "confidence": 0.1}),
                  settings)
    summary = store.summary(client)
    assert summary.params.boost_chat_file == 20.0
    assert [(c.param, c.count) for c in summary.changes] == [("boost_chat_file", 1)]


def test_unparsable_episode_changes_no_parameter(client: redis.Redis, settings: Settings) -> None:
    reducer.merge(client, episode(1, status="unparsable", answer={
        "proposed_changes": [{"param": "boost_chat_file", "direction": "increase"}]}), settings)
    summary = store.summary(client)
    assert summary.episodes == 1 and summary.unparsable == 1 and summary.proposals == 0
    assert client.hgetall(keys.PARAMS) == {}


def test_episode_log_is_trimmed_but_aggregates_keep_counting(client: redis.Redis,
                                                             settings: Settings) -> None:
    small = settings.model_copy(update={"episode_log_retention": 10, "insight_retention": 10})
    for i in range(30):
        reducer.merge(client, episode(i, answer={"structural_insights": [f"unique {i}"]}), small)
    assert client.llen(keys.EPISODE_LOG) == 10
    assert store.summary(client).episodes == 30
    assert client.zcard(keys.insights("structural")) <= 11
    assert client.hlen(keys.insight_text("structural")) == client.zcard(keys.insights("structural"))


def test_eight_concurrent_mergers_lose_no_update(client: redis.Redis, settings: Settings) -> None:
    def merge_range(start: int) -> None:
        c = store.connect(settings.state_url)
        for i in range(start, start + 50):
            ep = episode(i, params_version=versions.current_number(c))
            reducer.merge(c, ep, settings)
            reducer.merge(c, ep, settings)  # and each one twice

    threads = [threading.Thread(target=merge_range, args=(k * 50,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = store.summary(client)
    assert summary.episodes == 400 and summary.proposals == 400
    assert {(i.text, i.count) for i in summary.structural} == {
        ("insight 0", 134), ("insight 1", 133), ("insight 2", 133)}
    # a vote lands in at most one version, only in a step from the version it was cast on
    reasoned_on = {e["episode_id"]: e["params_version"]
                   for e in store.recent_episodes(client, 1_000)}
    records = [r for r, _ in versions.history(client, 1_000) if r.reason == "consensus"]
    voted = [v.episode_id for r in records for v in r.provenance]
    assert len(voted) == len(set(voted)) and not set(voted) & set(client.hkeys(keys.PENDING))
    assert all(reasoned_on[v.episode_id] == r.parent for r in records for v in r.provenance)
    assert all(len(r.provenance) >= settings.consensus_quorum for r in records)
    assert [r.version for r in records] == list(range(len(records), 0, -1))


def _merge_in_process(args: tuple[str, int]) -> int:
    url, start = args
    settings = Settings(redis_url=url)
    c = store.connect(url)
    return sum(reducer.merge(c, episode(i), settings) for i in range(start, start + 25))


def test_concurrent_processes_merge_each_episode_once(client: redis.Redis,
                                                      settings: Settings) -> None:
    # overlapping ranges: every episode is offered by two processes
    jobs = [(settings.state_url, k * 25) for k in range(4)] * 2
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        merged = sum(pool.map(_merge_in_process, jobs))
    assert merged == 100
    assert store.summary(client).episodes == 100


def _dump(client: redis.Redis) -> dict[str, object]:
    out: dict[str, object] = {}
    for key in sorted(client.scan_iter("ripmap:*")):
        kind = client.type(key)
        out[key] = {"hash": client.hgetall, "zset": lambda k: client.zrange(k, 0, -1,
                    withscores=True), "list": lambda k: client.lrange(k, 0, -1),
                    "string": client.get}[kind](key)
    return out
