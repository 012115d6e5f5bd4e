"""Free-text answers, as models really write them, into validated answers (table-driven)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.limits import MAX_REASONING_CHARS
from worker.reasoners import parsing
from worker.reasoners.parsing import extract_json, json_candidates, parse_answer, parse_wisdom

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
    "an escaped quote and a brace inside a string": Case(
        r'My answer: {"diagnosis": "a \"{\" in the query", "proposed_changes": '
        r'[["focus_decay", "increase", "small"]], "confidence": 0.6}',
        [("focus_decay", "increase", "small")], 0.6, diagnosis='a "{" in the query'),
    "an unclosed brace and a stray quote in the prose": Case(
        'Weights {like 5" screens. {"diagnosis": "x", "proposed_changes": '
        '[["depth_weight_deep", "increase", "small"]], "confidence": 0.6}',
        [("depth_weight_deep", "increase", "small")], 0.6),
    "a closing parenthesis and quotes come off the rationale": Case(
        '## Proposed Changes\n- focus_decay: increase small ("keep weight one hop out")  \n'
        "## Confidence\n0.5", [("focus_decay", "increase", "small")], 0.5),
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


def test_rationale_loses_only_the_closing_parenthesis() -> None:
    answer, _ = parse_answer(CASES["a closing parenthesis and quotes come off the rationale"].text)
    assert answer is not None
    assert answer.proposed_changes[0].rationale == "keep weight one hop out"


# Hostile answers of the largest size kept (answers are untrusted model output): each must
# be read in time linear in its length; the pytest timeout catches a quadratic regression.
N = MAX_REASONING_CHARS


def _fill(unit: str, head: str = "", tail: str = "") -> str:
    body = N - len(head) - len(tail)
    return head + (unit * (body // len(unit) + 1))[:body] + tail


HOSTILE_UNREADABLE = {
    "open braces": _fill("{"),
    "open objects": _fill('{"a": '),
    "open strings in braces": _fill('{"'),
    "escaped quotes in braces": _fill('{"\\"'),
    "open braces after JSON:": _fill("{", head="JSON: "),
    "opening fences": _fill("```{"),
    "opening json fences": _fill("```json\n{ "),
    "many empty fenced objects": _fill("```{}```"),
    "many empty objects": _fill("{} "),
    "deep nesting": '{"a":' + "[" * (N // 2 - 4) + "]" * (N // 2 - 4) + "}",
    "a heading then spaces": _fill(" ", head="## a", tail="x"),
    "a bold label then spaces": _fill(" ", head="**a", tail="x"),
    "list markers": _fill("- 1."),
}


@pytest.mark.parametrize("name", list(HOSTILE_UNREADABLE))
def test_hostile_answers_of_maximum_size_are_unreadable(name: str) -> None:
    text = HOSTILE_UNREADABLE[name]
    assert len(text) >= N - 8
    assert parse_answer(text) == (None, 0)
    assert parse_wisdom(text) is None


def test_hostile_sections_of_maximum_size_still_parse() -> None:
    text = (_fill(" ", head="## Diagnosis:  vendor leak", tail="!\n")
            + _fill(" ", head="## Proposed Changes\n- focus_decay: increase small", tail="\n")
            + "## Confidence\n" + "1" * N + "\n/10")
    answer, dropped = parse_answer(text)
    assert answer is not None
    assert answer.diagnosis.startswith("vendor leak") and answer.diagnosis.endswith("!")
    assert [c.param for c in answer.proposed_changes] == []  # out-of-range confidence drops it
    assert (answer.confidence, dropped) == (0.0, 1)


def test_only_the_first_proposals_are_validated_the_rest_count_as_dropped() -> None:
    change = '["focus_decay", "increase", "small"]'
    text = '{"proposed_changes": [' + ", ".join([change] * 10_000) + '], "confidence": 0.5}'
    answer, dropped = parse_answer(text)
    assert answer is not None
    assert len(answer.proposed_changes) == 1
    assert dropped == 9_999


class _CountingPattern:
    """A compiled pattern that counts the tokens its ``finditer`` yields."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern, self.tokens = pattern, 0

    def finditer(self, text: str, pos: int = 0) -> Iterator[re.Match[str]]:
        for match in self.pattern.finditer(text, pos):
            self.tokens += 1
            yield match


@pytest.mark.parametrize("name", list(HOSTILE_UNREADABLE))
def test_work_is_linear_in_the_answer_length(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    text = HOSTILE_UNREADABLE[name]
    counting = _CountingPattern(parsing._JSON_TOKEN)
    monkeypatch.setattr(parsing, "_JSON_TOKEN", counting)
    candidates = json_candidates(text)
    # at most three scans over the text (two for the top-level objects, one for JSON:) ...
    assert counting.tokens <= 3 * len(text)
    # ... and one decode per candidate: a bounded number of spans, none decoded twice
    assert len(candidates) <= 1 + 2 * parsing._MAX_CANDIDATES
    assert len(set(candidates)) == len(candidates)
    assert sum(map(len, candidates)) <= 3 * len(text)


def _reference_objects(text: str) -> list[str]:
    """Top-level objects as a scan restarted at every unclosed brace finds them (quadratic:
    short texts only)."""
    out, start = [], text.find("{")
    while start != -1:
        end = _reference_close(text, start)
        if end == -1:
            start = text.find("{", start + 1)
        else:
            out.append(text[start : end + 1])
            start = text.find("{", end + 1)
    return out


def _reference_close(text: str, start: int) -> int:
    depth, in_string = 0, False
    for i in range(start, len(text)):
        if in_string:
            in_string = text[i] != '"'
        elif text[i] == '"':
            in_string = True
        elif text[i] in "{}":
            depth += 1 if text[i] == "{" else -1
            if depth == 0:
                return i
    return -1


prose_with_braces = st.text(alphabet='{}" a:1,', max_size=40)


@settings(max_examples=400, deadline=None)
@given(prose_with_braces)
def test_objects_are_those_a_scan_from_every_brace_finds(text: str) -> None:
    expected = list(dict.fromkeys(reversed(_reference_objects(text)[-parsing._MAX_CANDIDATES:])))
    assert json_candidates(text) == expected


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet='{}"\\ a:1,`[]\n#*-', max_size=60).map(lambda t: "```json " + t))
def test_fenced_objects_are_those_the_lazy_regex_finds(text: str) -> None:
    found = re.findall(r"```(?:json)?\s*(\{.*?\})\s*```", text, re.DOTALL)
    assert parsing._fenced_objects(text) == found[: parsing._MAX_CANDIDATES]


json_like = st.lists(st.sampled_from(
    ['{', '}', '"', '\\', ' ', ':', ',', '[', ']', '```', 'JSON:', '\n', '## Confidence\n',
     '## Proposed Changes\n', '- focus_decay: increase small', '0.5', '/10', '**', '(', ')',
     '"diagnosis"', '"confidence"', '"proposed_changes"', '"presets"', 'NaN', '1e999']),
    max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | json_like)
def test_parsing_never_raises(text: str) -> None:
    parse: Callable[[str], object]
    for parse in (parse_answer, parse_wisdom, extract_json):
        parse(text)
