from schemas.failures import FailureBatch, RankingFailure
from schemas.params import ParameterPoint
from tests.factories import failure
from worker import signatures
from worker.reasoners.base import EpisodeRequest
from worker.reasoners.heuristic import HeuristicReasoner


def _f(**kw: object) -> RankingFailure:
    return RankingFailure.model_validate(failure(0, **kw))


def test_detectors_name_what_they_see() -> None:
    f = _f(query="parser errors", seed_file="crates/syntax/src/parser.rs",
           expected_top=["crates/syntax/src/parser/errors.rs"],
           actual_top=["Cargo.toml", "README.md", "vendor/x/lib.rs"], ndcg=0.1,
           commit_message="fix panic")
    found = signatures.signatures(f)
    assert "root-level files crowd the top ranks ahead of nested expected files" in found
    assert "vendor or generated files appear in the top ranks" in found
    assert "query terms appear in expected paths but in no top-ranked path" in found
    assert "severe failure: NDCG below 0.2" in found
    assert "the commit is a bug fix (co-change evidence is strong)" in found
    assert "the seed file itself dominates the top ranks" not in found


def test_seed_domination_and_colocation() -> None:
    f = _f(seed_file="src/db/connection.rs", expected_top=["src/db/pool.rs", "src/db/query.rs"],
           actual_top=["src/db/connection.rs", "src/config.rs"], ndcg=0.45, commit_message="")
    found = signatures.signatures(f)
    assert "the seed file itself dominates the top ranks" in found
    assert "expected files are co-located with the seed file" in found


def test_heuristic_reasoner_is_deterministic_and_says_it_is_rule_based() -> None:
    batch = FailureBatch.model_validate({"failures": [failure(i) for i in range(3)]})
    request = EpisodeRequest(failures=list(batch.failures), params=ParameterPoint(),
                             signatures=signatures.batch_signatures(list(batch.failures)))
    a, b = HeuristicReasoner().reason(request), HeuristicReasoner().reason(request)
    assert a == b and a.answer is not None
    assert "Rule-based" in a.answer.diagnosis
    assert all(c.rationale.startswith("rule-based") for c in a.answer.proposed_changes)
    assert {c.param for c in a.answer.proposed_changes} >= {"depth_weight_root"}
    assert 0.0 <= a.answer.confidence <= 1.0


def test_heuristic_with_no_pattern_proposes_nothing() -> None:
    f = _f(query="zzz", seed_file="a/b/c.rs", expected_top=["x/y.rs", "src/m.rs"],
           actual_top=["x/y.rs", "q/r/s.rs"], ndcg=0.45, commit_message="refactor")
    request = EpisodeRequest(failures=[f], params=ParameterPoint(),
                             signatures=signatures.batch_signatures([f]))
    reply = HeuristicReasoner().reason(request)
    assert reply.answer is not None and reply.answer.proposed_changes == []
