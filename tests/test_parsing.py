"""Free-text answers, as models really write them, into validated answers (table-driven)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from worker.reasoners.parsing import extract_json, parse_answer, parse_wisdom

SEED = """## Diagnosis
Root files dominate the top ranks.

## Parameter Interactions
- low alpha + high chat boost = tunnel vision

## Proposed Changes
depth_weight_root: decrease medium "root noise"
depth_weight_deep: increase small "nested files matter"

## Structural Insights
- path tokens are not a ranking signal

## Confidence
0.7
"""

CHATTY = """Sure! Here's my analysis of the failures.

### Diagnosis:
The seed file dominates.

### Proposed Changes:
1. **boost_chat_file**: decrease large — the seed drowns its neighbours
2. `pagerank_alpha` = lower small (more personalisation)
3. warp_factor: increase small "not a parameter"
* Focus_Decay: INCREASE Medium "keep weight one hop out"

### Confidence:
0.7 — because two failures agree

Hope this helps!"""

UPSTREAM = """REASONING: vendor files leak in {seriously}; depth_weight_vendor is too high.
JSON: {"strategy_capsule": "cut vendor", "diagnosis": "vendor leak",
"param_interactions": ["vendor weight and depth weights overlap"],
"proposed_changes": {"depth_weight_vendor": ["decrease", "large", "vendor leak"],
                     "bogus_param": ["increase", "small", "x"]},
"structural_insights": [], "confidence": "0.7 — because",}"""

FENCED = """Here is the answer:
```json
{
  "diagnosis": "query terms name the expected files",
  "proposed_changes": [
    {"param": "boost_mentioned_ident", "direction": "Increase", "magnitude": "LARGE",
     "rationale": "query {terms} match paths"},
  ],
  "confidence": 0.65,
}
```
Let me know if you need more!"""


@dataclass(frozen=True)
class Case:
    """One messy answer and what must come out of it."""

    text: str
    changes: list[tuple[str, str, str]]  # (param, direction, magnitude)
    confidence: float
    dropped: int = 0
    diagnosis: str | None = None  # a substring the diagnosis must contain


CASES: dict[str, Case] = {
    "seed headings": Case(SEED, [("depth_weight_root", "decrease", "medium"),
                                 ("depth_weight_deep", "increase", "small")], 0.7,
                          diagnosis="Root files dominate"),
    "extra prose, bold, numbering, synonyms, case, unknown param": Case(
        CHATTY, [("boost_chat_file", "decrease", "large"), ("pagerank_alpha", "decrease", "small"),
                 ("focus_decay", "increase", "medium")], 0.7, dropped=1,
        diagnosis="seed file dominates"),
    "upstream JSON form, dict changes, trailing comma, unknown param, confidence prose": Case(
        UPSTREAM, [("depth_weight_vendor", "decrease", "large")], 0.7, dropped=1,
        diagnosis="vendor leak"),
    "code fence, trailing commas, upper-case enums, braces in strings": Case(
        FENCED, [("boost_mentioned_ident", "increase", "large")], 0.65),
    "confidence as a percentage": Case(
        "## Proposed Changes\n- focus_decay: increase small\n## Confidence\n70%",
        [("focus_decay", "increase", "small")], 0.7),
    "confidence on the heading line": Case(
        "## Diagnosis\nx\n## Proposed Changes\n- focus_decay: raise small\n## Confidence: 0.75",
        [("focus_decay", "increase", "small")], 0.75),
    "confidence as a bold label": Case(
        "## Diagnosis\nx\n## Proposed Changes\n- focus_decay: increase small\n\n"
        "**Confidence: 0.6**", [("focus_decay", "increase", "small")], 0.6),
    "confidence as a plain label after the changes": Case(
        "## Proposed Changes\n- focus_decay: increase small\n\nConfidence: 0.8/1 (fairly sure)",
        [("focus_decay", "increase", "small")], 0.8),
    "confidence out of ten": Case(
        "## Proposed Changes\n- focus_decay: increase small\n## Confidence\n7/10",
        [("focus_decay", "increase", "small")], 0.7),
    "confidence out of range drops every proposal": Case(
        '{"diagnosis": "x", "proposed_changes": [["focus_decay", "increase", "small"]], '
        '"confidence": 1.5}', [], 0.0, dropped=1),
    "bare NaN confidence drops every proposal": Case(
        '{"diagnosis": "x", "proposed_changes": [["focus_decay", "increase", "small"], '
        '["focus_max_hops", "decrease"]], "confidence": NaN}', [], 0.0, dropped=2),
    "confidence as a word drops every proposal": Case(
        "## Proposed Changes\n- focus_decay: increase small\n## Confidence\nhigh", [], 0.0,
        dropped=1),
    "a second change to the same parameter is dropped": Case(
        "## Proposed Changes\n- focus_decay: increase small\n- focus_decay: decrease large\n"
        "## Confidence\n0.5", [("focus_decay", "increase", "small")], 0.5, dropped=1),
    "a bad direction is dropped": Case(
        '{"proposed_changes": [{"param": "focus_decay", "direction": "sideways"}, '
        '{"param": "focus_max_hops", "direction": "decrease", "magnitude": "none"}], '
        '"confidence": 0.4}', [("focus_max_hops", "decrease", "medium")], 0.4, dropped=1),
    "the answer object is chosen, not a nested object inside it": Case(
        'My answer: {"diagnosis": "x", "proposed_changes": [{"param": "focus_decay", '
        '"direction": "increase"}], "confidence": 0.4}', [("focus_decay", "increase", "medium")],
        0.4),
    "an example object before the answer is ignored": Case(
        'Use a format like {"a": 1}. Mine: {"diagnosis": "x", "proposed_changes": [], '
        '"confidence": 0.3}', [], 0.3),
    "an unclosed brace in the prose does not hide the answer": Case(
        'Weights {like these are odd. JSON: {"diagnosis": "x", "proposed_changes": '
        '[["depth_weight_deep", "increase", "small"]], "confidence": 0.6}',
        [("depth_weight_deep", "increase", "small")], 0.6),
    "section aliases": Case(
        "## Proposed Parameter Changes\n- depth_weight_deep: increase large\n"
        "## Overall Confidence\n0.9", [("depth_weight_deep", "increase", "large")], 0.9),
}


@pytest.mark.parametrize("name", list(CASES))
def test_messy_answers(name: str) -> None:
    case = CASES[name]
    answer, dropped = parse_answer(case.text)
    assert answer is not None
    got = [(c.param, c.direction.value, c.magnitude.value) for c in answer.proposed_changes]
    assert got == case.changes
    assert answer.confidence == pytest.approx(case.confidence)
    assert dropped == case.dropped
    if case.diagnosis:
        assert case.diagnosis in answer.diagnosis


def test_lists_and_rationales_come_through() -> None:
    answer, _ = parse_answer(SEED)
    assert answer is not None
    assert answer.param_interactions == ["low alpha + high chat boost = tunnel vision"]
    assert answer.structural_insights == ["path tokens are not a ranking signal"]
    assert [c.rationale for c in answer.proposed_changes] == ["root noise", "nested files matter"]


@pytest.mark.parametrize("text", [
    "I could not determine anything useful.",
    "",
    '{"unrelated": true, "nested": {"param": "focus_decay"}}',
    "## Notes\nnothing here",
])
def test_unreadable_text_is_none(text: str) -> None:
    assert parse_answer(text) == (None, 0)


WISDOM = """Here is the distillation:
{"presets": [{"name": "deep-code", "params": {"depth_weight_deep": 0.3, "focus_decay": 0.4},
  "when_to_use": "monorepos with deep trees"},],
 "heuristics": [{"condition": "vendor files in top 10",
                 "adjustment": "decrease depth_weight_vendor large"}],
 "warnings": ["low alpha with a high chat boost"], "intuitions": "depth matters"}
Anything else?"""


def test_wisdom_is_the_outer_object_with_defaults_for_missing_params() -> None:
    draft = parse_wisdom(WISDOM)
    assert draft is not None
    assert draft.presets[0].params.depth_weight_deep == 0.3
    assert draft.presets[0].params.pagerank_alpha == 0.85
    assert draft.heuristics[0].adjustment == "decrease depth_weight_vendor large"


@pytest.mark.parametrize("text", [
    '{"presets": [{"name": "x", "params": {"pagerank_alpha": 1.5}, "when_to_use": "w"}]}',
    '{"presets": [{"name": "x", "params": {"pagerank_alpha": NaN}, "when_to_use": "w"}]}',
    '{"diagnosis": "an episode answer, not wisdom"}',
    "no JSON at all",
])
def test_invalid_wisdom_is_none(text: str) -> None:
    assert parse_wisdom(text) is None


def test_extract_json_without_keys_takes_the_last_top_level_object() -> None:
    assert extract_json('first {"a": 1} then {"b": {"c": 2}}') == {"b": {"c": 2}}
