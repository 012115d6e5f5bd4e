import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.episode import ProposedChange, ReasonerAnswer
from schemas.errors import describe
from schemas.failures import FailureBatch, RankingFailure
from schemas.params import PARAM_NAMES, PARAM_SPECS, ParameterPoint
from tests.factories import failure


def test_parameter_point_has_the_seeds_17_defaults() -> None:
    params = ParameterPoint()
    assert len(PARAM_NAMES) == 17
    assert params.pagerank_alpha == 0.85 and params.boost_chat_file == 20.0
    assert all(getattr(params, n) == PARAM_SPECS[n].default for n in PARAM_NAMES)


@pytest.mark.parametrize(
    ("field", "value"),
    [("pagerank_alpha", 0.0), ("pagerank_alpha", 1.0), ("depth_weight_deep", -0.1),
     ("git_recency_decay_days", 0.0), ("focus_max_hops", -1.0), ("boost_chat_file", math.nan),
     ("boost_chat_file", math.inf), ("focus_decay", 0.0)],
)
def test_parameter_point_rejects_out_of_bounds_and_non_finite(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as exc:
        ParameterPoint.model_validate({field: value})
    assert field in str(exc.value)


def test_unknown_parameter_is_named() -> None:
    with pytest.raises(ValidationError) as exc:
        ParameterPoint.model_validate({"pagerank_beta": 0.5})
    assert "pagerank_beta" in str(exc.value)


@given(st.sampled_from(PARAM_NAMES), st.floats(allow_nan=True, allow_infinity=True))
def test_clamp_always_lands_inside_valid_bounds(name: str, value: float) -> None:
    spec = PARAM_SPECS[name]
    if math.isnan(value):
        return
    assert spec.accepts(spec.clamp(value))


def test_ndcg_accepts_integer_zero_and_one_from_other_languages() -> None:
    assert RankingFailure.model_validate(failure(ndcg=0)).ndcg == 0.0
    assert RankingFailure.model_validate(failure(ndcg=1)).ndcg == 1.0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"ndcg": 1.7}, "ndcg"), ({"ndcg": True}, "ndcg"), ({"ndcg": "NaN"}, "ndcg"),
     ({"expected_top": []}, "expected_top"), ({"seed_file": ""}, "seed_file"),
     ({"commit_message": "x" * 10_000_000}, "commit_message"), ({"bogus": 1}, "bogus"),
     ({"actual_top": ["a"] * 101}, "actual_top"), ({"query": 5}, "query")],
)
def test_bad_failures_are_rejected_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        RankingFailure.model_validate(failure(**overrides))
    assert any(line.startswith(field) for line in describe(exc.value))


def test_batch_id_is_derived_from_content() -> None:
    a = FailureBatch.model_validate({"failures": [failure(1), failure(2)]})
    b = FailureBatch.model_validate({"failures": [failure(1), failure(2)]})
    c = FailureBatch.model_validate({"failures": [failure(1), failure(3)]})
    assert a.batch_id == b.batch_id != c.batch_id


def test_batch_of_zero_failures_is_rejected() -> None:
    with pytest.raises(ValidationError):
        FailureBatch.model_validate({"failures": []})


def test_proposed_change_must_name_a_parameter() -> None:
    with pytest.raises(ValidationError, match="unknown parameter"):
        ProposedChange(param="nope", direction="increase")


def test_answer_rejects_nan_and_out_of_range_confidence() -> None:
    for bad in (math.nan, 1.5, -0.1):
        with pytest.raises(ValidationError):
            ReasonerAnswer(confidence=bad)


def test_describe_names_nested_paths() -> None:
    with pytest.raises(ValidationError) as exc:
        FailureBatch.model_validate({"failures": [failure(), failure(ndcg=2)]})
    assert describe(exc.value)[0].startswith("failures[1].ndcg:")
