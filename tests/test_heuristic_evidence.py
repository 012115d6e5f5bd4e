"""The offline reasoner reads the evaluated trajectory: momentum on what helped, reversal of
what hurt, exploration past what had no effect, and one plan per version."""

from __future__ import annotations

import json

from schemas.episode import Direction, Magnitude, ProposedChange
from schemas.failures import FailureBatch, RankingFailure
from schemas.params import ParameterPoint
from state import versions
from tests.factories import failure
from worker import signatures
from worker.episodes import history
from worker.reasoners.base import EpisodeRequest, VersionEvidence
from worker.reasoners.heuristic import ORDER, HeuristicReasoner, read_history

INC, DEC = Direction.INCREASE, Direction.DECREASE


def _failures(start: int = 0) -> list[RankingFailure]:
    batch = FailureBatch.model_validate({"failures": [failure(i) for i in range(start,
                                                                                 start + 5)]})
    return list(batch.failures)


def _v(version: int, ndcg: float | None, factors: dict[str, float] | None = None,
       reason: str = "consensus") -> VersionEvidence:
    if version == 0:
        return VersionEvidence(version=0, ndcg=ndcg, cases=100 if ndcg is not None else 0)
    return VersionEvidence(version=version, parent=version - 1, reason=reason,
                           factors=factors or {}, ndcg=ndcg,
                           cases=100 if ndcg is not None else 0)


def _request(hist: list[VersionEvidence], params: ParameterPoint | None = None,
             failures: list[RankingFailure] | None = None) -> EpisodeRequest:
    fs = failures if failures is not None else _failures()
    return EpisodeRequest(failures=fs, params=params or ParameterPoint(),
                          signatures=signatures.batch_signatures(fs),
                          params_version=hist[-1].version, history=hist)


def _changes(request: EpisodeRequest) -> dict[str, ProposedChange]:
    reply = HeuristicReasoner().reason(request)
    assert reply.answer is not None
    return {c.param: c for c in reply.answer.proposed_changes}


def _confidence(request: EpisodeRequest) -> float:
    reply = HeuristicReasoner().reason(request)
    assert reply.answer is not None
    return reply.answer.confidence


def test_a_move_that_helped_is_continued_with_more_confidence() -> None:
    hist = [_v(0, 0.60), _v(1, 0.62, {"git_churn_max_boost": 2.0})]
    changes = _changes(_request(hist, ParameterPoint(git_churn_max_boost=10.0)))
    assert list(changes) == ["git_churn_max_boost"]
    assert changes["git_churn_max_boost"].direction is INC
    assert changes["git_churn_max_boost"].magnitude is Magnitude.LARGE
    assert "raised tuning NDCG" in changes["git_churn_max_boost"].rationale
    explore = _confidence(_request([_v(0, 0.60)]))
    assert _confidence(_request(hist, ParameterPoint(git_churn_max_boost=10.0))) > explore


def test_a_move_that_hurt_is_undone_then_tried_the_other_way() -> None:
    hist = [_v(0, 0.60), _v(1, 0.55, {"git_churn_max_boost": 2.0})]
    changes = _changes(_request(hist, ParameterPoint(git_churn_max_boost=10.0)))
    back = changes["git_churn_max_boost"]
    assert back.direction is DEC and back.magnitude is Magnitude.LARGE  # back to v0
    assert len(changes) == 2  # and, in the same step, one untried parameter is probed
    probe = next(p for p in changes if p != "git_churn_max_boost")
    # once back at v0's value, the other side of the hurting move comes first
    factors = {"git_churn_max_boost": 0.5, probe: 2.0 if changes[probe].direction is INC
               else 0.5}
    later = _changes(_request([*hist, _v(2, 0.60, factors)]))
    assert later["git_churn_max_boost"].direction is DEC
    assert "other side" in later["git_churn_max_boost"].rationale


def test_flat_evidence_moves_on_to_an_untried_parameter() -> None:
    first = _changes(_request([_v(0, 0.60)]))
    assert len(first) == 1
    (tried, change), = first.items()
    factor = 2.0 if change.direction is INC else 0.5
    hist = [_v(0, 0.60), _v(1, 0.60, {tried: factor})]
    changes = _changes(_request(hist, ParameterPoint.model_validate(
        {**ParameterPoint().as_floats(), tried: ParameterPoint().as_floats()[tried] * factor})))
    assert tried not in changes and len(changes) == 1
    (nxt,) = changes
    assert ORDER.index(nxt) == ORDER.index(tried) + 1  # the next in the exploration order
    assert changes[nxt].magnitude is Magnitude.LARGE


def test_the_same_request_gives_the_same_answer() -> None:
    hist = [_v(0, 0.60), _v(1, 0.61, {"pagerank_alpha": 0.5}),
            _v(2, 0.605, {"pagerank_alpha": 0.5})]
    request = _request(hist, ParameterPoint(pagerank_alpha=0.2125))
    a, b = HeuristicReasoner().reason(request), HeuristicReasoner().reason(request)
    assert a == b


def test_concurrent_episodes_on_one_version_agree() -> None:
    """Different batches on the same version and history propose the same moves, so the
    consensus average does not cancel them."""
    for hist, params in (
        ([_v(0, 0.60)], ParameterPoint()),
        ([_v(0, 0.60), _v(1, 0.62, {"pagerank_alpha": 0.5})], ParameterPoint(pagerank_alpha=0.425)),
        ([_v(0, 0.60), _v(1, 0.58, {"pagerank_alpha": 0.5})], ParameterPoint(pagerank_alpha=0.425)),
    ):
        answers = []
        for start in (0, 5, 10, 15):
            changes = _changes(_request(hist, params, _failures(start)))
            answers.append({p: (c.direction, c.magnitude) for p, c in changes.items()})
        assert answers[0] and all(a == answers[0] for a in answers)


def test_an_unevaluated_current_version_keeps_its_move_and_votes_gently() -> None:
    hist = [_v(0, 0.60), _v(1, None, {"pagerank_alpha": 0.5})]
    request = _request(hist, ParameterPoint(pagerank_alpha=0.425))
    changes = _changes(request)
    assert "pagerank_alpha" not in changes and len(changes) == 1
    assert 0.3 <= _confidence(request) <= 0.35


def test_without_evaluations_the_rules_vote_as_before() -> None:
    request = _request([_v(0, None)])
    reply = HeuristicReasoner().reason(request)
    no_history = HeuristicReasoner().reason(EpisodeRequest(
        failures=request.failures, params=request.params, signatures=request.signatures))
    assert reply.answer == no_history.answer


def test_history_is_read_from_the_episode_context_rows() -> None:
    brief = {"parent": 1, "reason": "consensus", "factors": {"pagerank_alpha": 0.5}}
    rows = [(2, json.dumps(brief), 10, 6.2), (1, json.dumps({"parent": 0, "reason": "consensus",
                                                              "factors": {}}), 10, 6.0),
            (0, "", 10, 5.9)]
    hist = history(rows)
    assert [h.version for h in hist] == [0, 1, 2]
    assert hist[2].factors == {"pagerank_alpha": 0.5} and hist[2].parent == 1
    assert abs((hist[2].ndcg or 0) - 0.62) < 1e-12 and hist[0].reason == "initial"
    # the same rows the prompt's trajectory lines come from
    assert len(versions.trajectory(rows)) == 3
    reading = read_history(hist)
    assert reading is not None and reading.anchor.version == 2
    assert reading.probes[-1].move.keys() == {"pagerank_alpha"}
