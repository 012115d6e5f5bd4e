import threading

import redis

from schemas.settings import Settings
from schemas.wisdom import Wisdom
from state import keys, store
from tests.factories import episode
from worker import distill, reducer
from worker.reasoners.heuristic import HeuristicReasoner


def test_distill_skips_when_nothing_was_merged(client: redis.Redis, settings: Settings) -> None:
    assert distill.distill(client, settings, HeuristicReasoner()).status == "nothing-new"
    assert store.latest_wisdom(client) is None


def test_distill_versions_wisdom_and_consumes_pending(client: redis.Redis,
                                                      settings: Settings) -> None:
    for i in range(3):
        reducer.merge(client, episode(i), settings)
    first = distill.distill(client, settings, HeuristicReasoner())
    assert (first.status, first.version, first.episodes) == ("distilled", 1, 3)
    assert distill.distill(client, settings, HeuristicReasoner()).status == "nothing-new"
    reducer.merge(client, episode(9), settings)
    assert distill.distill(client, settings, HeuristicReasoner()).version == 2
    wisdom = store.latest_wisdom(client)
    assert isinstance(wisdom, Wisdom) and wisdom.episodes_seen == 4
    assert client.llen(keys.WISDOM_HISTORY) == 2
    assert "# Distilled Operator Wisdom" in wisdom.to_markdown()


def test_concurrent_distills_produce_one_version(client: redis.Redis, settings: Settings) -> None:
    reducer.merge(client, episode(1), settings)
    outcomes: list[str] = []

    def run() -> None:
        c = store.connect(settings.state_url)
        outcomes.append(distill.distill(c, settings, HeuristicReasoner()).status)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("distilled") == 1
    assert set(outcomes) <= {"distilled", "locked", "nothing-new"}
    assert store.summary(client).wisdom_version == 1


def test_presets_in_wisdom_are_valid_parameter_points(client: redis.Redis,
                                                      settings: Settings) -> None:
    change = {"param": "pagerank_alpha", "direction": "increase", "magnitude": "large"}
    for i in range(20):
        reducer.merge(client, episode(i, answer={"proposed_changes": [change]}), settings)
    distill.distill(client, settings, HeuristicReasoner())
    wisdom = store.latest_wisdom(client)
    assert wisdom is not None and len(wisdom.presets) >= 3
    assert all(0 < p.params.pagerank_alpha < 1 for p in wisdom.presets)
