"""A data dir written by the previous layout (``producer/`` and ``worker/`` holding the
state code) is read by this one unchanged.

``tests/data/legacy_datadir/redis/appendonly.aof`` is the embedded default's AOF as that
layout left it: ``make demo`` (two episodes, a consensus step to v1, a distillation), then,
through its modules, a dead letter ``legacy-letter-1``, an evaluation of v1 (NDCG 0.42,
50 cases), a manual v2 (``pagerank_alpha=0.5``) evaluated at 0.30 and the rollback to v3.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ops import embedded
from schemas.params import ParameterPoint
from schemas.settings import Settings
from state import deadletters, store, versions

LEGACY = Path(__file__).parent / "data" / "legacy_datadir"


@pytest.fixture
def legacy(tmp_path: Path) -> Iterator[redis.Redis]:
    """The legacy data dir, copied, served by the embedded default's redis-server."""
    data = tmp_path / "ripmap"
    shutil.copytree(LEGACY, data)
    proc, url = embedded.start_redis(data / "redis")
    client = store.connect(url)
    yield client
    client.close()
    embedded.stop([proc], 10)


def test_versions_scores_and_pointers_read_unchanged(legacy: redis.Redis) -> None:
    rows = versions.history(legacy, 10)
    assert [(v.version, v.reason) for v, _ in rows] == [
        (3, "rollback"), (2, "manual"), (1, "consensus"), (0, "initial")]
    scores = {v.version: (s.cases, s.mean_ndcg) for v, s in rows}
    assert scores[1] == (50, pytest.approx(0.42)) and scores[2] == (50, pytest.approx(0.30))
    assert versions.current_number(legacy) == 3 and versions.best_number(legacy) == 1
    assert store.get_params(legacy) == rows[2][0].params  # rolled back to v1's parameters


def test_scratchpad_wisdom_and_dead_letters_read_unchanged(legacy: redis.Redis) -> None:
    summary = store.summary(legacy)
    assert summary.episodes >= 2 and summary.interactions and summary.changes
    wisdom = store.latest_wisdom(legacy)
    assert wisdom is not None and wisdom.version == 1
    letter = deadletters.get(legacy, "legacy-letter-1")
    assert letter is not None and "reasoner refused" in letter.reason


def test_the_new_code_carries_on_from_legacy_state(legacy: redis.Redis) -> None:
    record = versions.set_manual(legacy, ParameterPoint(focus_decay=0.4), "after upgrade",
                                 Settings())
    assert record.version == 4 and record.parent == 3
    assert versions.current_number(legacy) == 4
