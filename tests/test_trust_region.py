"""No drift without evidence: at most max_unevaluated_steps consensus steps beyond the last
evaluated version; the next waits, votes kept, until an evaluation arrives."""

from __future__ import annotations

import redis

from schemas.params import ParameterPoint
from schemas.settings import Settings
from schemas.versions import Evaluation
from state import versions
from tests.factories import episode
from worker import reducer


def _vote(client: redis.Redis, settings: Settings, i: int) -> None:
    reducer.merge(client, episode(i, params_version=versions.current_number(client)), settings)


def test_steps_wait_for_an_evaluation_beyond_the_trust_region(
    client: redis.Redis, settings: Settings
) -> None:
    settings = settings.model_copy(update={"consensus_quorum": 1, "max_unevaluated_steps": 3})
    for i in range(3):
        _vote(client, settings, i)
    assert versions.current_number(client) == 3
    assert versions.unevaluated_steps(client) == 3
    _vote(client, settings, 3)  # a fourth step would leave the trust region
    assert versions.current_number(client) == 3 and versions.pending_votes(client) == 1
    assert versions.held_for_evaluation(client, settings)
    versions.record_evaluation(client, Evaluation(version=3, mean_ndcg=0.5, cases=40), "e3",
                               settings)
    assert versions.unevaluated_steps(client) == 0 and not versions.held_for_evaluation(
        client, settings)
    _vote(client, settings, 4)  # evidence arrived: the waiting vote and this one step now
    assert versions.current_number(client) == 4 and versions.pending_votes(client) == 0


def test_an_evaluated_ancestor_resets_the_count(client: redis.Redis, settings: Settings) -> None:
    settings = settings.model_copy(update={"consensus_quorum": 1, "max_unevaluated_steps": 2})
    versions.record_evaluation(client, Evaluation(version=0, mean_ndcg=0.4, cases=40), "e0",
                               settings)
    _vote(client, settings, 0)
    _vote(client, settings, 1)
    _vote(client, settings, 2)
    assert versions.current_number(client) == 2 and versions.unevaluated_steps(client) == 2


def test_steps_that_left_retention_unevaluated_still_count(
    client: redis.Redis, settings: Settings
) -> None:
    settings = settings.model_copy(update={"consensus_quorum": 1, "version_retention": 10})
    for i in range(3):
        _vote(client, settings, i)
    for i in range(12):  # manual versions push the unevaluated chain out of retention
        versions.set_manual(client, ParameterPoint(focus_decay=0.3 + i / 100), f"m{i}", settings)
    assert versions.unevaluated_steps(client) >= settings.max_unevaluated_steps
    _vote(client, settings, 3)
    assert versions.pending_votes(client) == 1  # the 3 steps left retention, still counted
