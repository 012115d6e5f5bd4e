"""Free-text answers into validated answers: upstream's ``JSON:`` form or the seed's headings.

Used for reasoners without tool use (the ``claude`` CLI). Whatever the text says, only
proposals that validate (known parameter, direction, magnitude) survive; the rest are
counted as dropped.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from typing import Any

from pydantic import ValidationError

from schemas.episode import ProposedChange, ReasonerAnswer
from schemas.limits import MAX_ITEMS
from schemas.wisdom import WisdomDraft
from state import stepping

# Every pattern here runs in time linear in its input (answers are untrusted text): no
# quantified parts that can match the same characters as a neighbour.
# "## Title" or "## Title: inline text" (any title ends the previous section) ...
_HEADING_START = re.compile(r"\s*#{1,4}\s*(?=[A-Za-z])")
# ... or "**Title:** text", "**Title: text**", "Title: text" (known titles only)
_TITLE = re.compile(r"[A-Za-z][A-Za-z ]*")
_KNOWN_SECTIONS = ("diagnosis", "parameter interactions", "proposed changes",
                   "structural insights", "confidence")
_SECTION_ALIASES = {
    "param interactions": "parameter interactions",
    "interactions": "parameter interactions",
    "proposed parameter changes": "proposed changes",
    "parameter changes": "proposed changes",
    "structural proposals": "structural insights",
    "confidence level": "confidence",
    "overall confidence": "confidence",
}
# The rationale is the rest of the line; a closing ")" and the quotes come off in _rationale.
_CHANGE_LINE = re.compile(
    r"[\s\-*•\d.)]*`?\*{0,2}(?P<param>[A-Za-z_]\w*)\*{0,2}`?\s*[:=\-–—]+\s*"
    r"(?P<direction>increase|decrease|raise|lower)\s*(?P<magnitude>small|medium|large)?"
    r"[\s:,\-–—(]*(?P<rationale>.*)",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?%?|nan|inf", re.IGNORECASE)
# Starts only where a run of digits starts, so a long run is not rescanned from each digit.
_SCALE = re.compile(r"(?<!\d)(?P<value>\d+(?:\.\d+)?)\s*/\s*(?P<of>10|1|100)\b")
# A JSON string (to the end of the text when unterminated) or a brace.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[{}]', re.DOTALL)
_FENCE_OPEN = re.compile(r"```(?:json)?\s*\{")
_FENCE_CLOSE = re.compile(r"\}\s*```")
_DIRECTION_SYNONYMS = {"raise": "increase", "lower": "decrease"}
_MAX_CANDIDATES = 20  # fenced and top-level objects tried each (an answer has one or two)
_MAX_PROPOSALS = MAX_ITEMS  # proposals validated; any more are counted as dropped


_ANSWER_KEYS = ("diagnosis", "param_interactions", "proposed_changes", "structural_insights",
                "confidence")
_WISDOM_KEYS = ("presets", "heuristics", "warnings", "intuitions")


def parse_answer(text: str) -> tuple[ReasonerAnswer | None, int]:
    """``(answer, dropped proposals)``; answer is None when nothing could be read."""
    data = extract_json(text, _ANSWER_KEYS)
    if data is not None:
        return answer_from_dict(data)
    sections = _sections(text)
    if not sections:
        return None, 0
    return answer_from_dict(_dict_from_sections(sections))


def parse_wisdom(text: str) -> WisdomDraft | None:
    """A distillation answer's JSON object as a validated draft, or None."""
    data = extract_json(text, _WISDOM_KEYS)
    if data is None:
        return None
    try:
        return WisdomDraft.model_validate(data)
    except ValidationError:
        return None


def extract_json(text: str, keys: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The JSON object after ``JSON:``, in a code fence, or the last top-level one; with
    ``keys``, the first such object having any of them (an example or a nested object
    elsewhere in the text is not mistaken for the answer). Linear in the length of ``text``:
    at most ``1 + 2 * _MAX_CANDIDATES`` spans are decoded, and they do not overlap within
    each kind."""
    for candidate in json_candidates(text):
        try:
            value = json.loads(_strip_trailing_commas(candidate))
        except (ValueError, RecursionError):  # RecursionError: nesting too deep
            continue
        if isinstance(value, dict) and (not keys or any(k in value for k in keys)):
            return value
    return None


def answer_from_dict(data: dict[str, Any]) -> tuple[ReasonerAnswer | None, int]:
    """Validate a loose dict field by field, dropping (and counting) bad proposals."""
    changes, dropped = _changes(data.get("proposed_changes", []))
    confidence = _confidence(data.get("confidence"))
    if confidence is None:
        dropped, changes, confidence = dropped + len(changes), [], 0.0
    try:
        answer = ReasonerAnswer(
            diagnosis=str(data.get("diagnosis", ""))[:60_000],
            param_interactions=_strings(data.get("param_interactions")),
            proposed_changes=stepping.first_per_param(changes),
            structural_insights=_strings(data.get("structural_insights")),
            confidence=confidence,
        )
    except ValidationError:
        return None, dropped + len(changes)
    return answer, dropped + len(changes) - len(answer.proposed_changes)


def json_candidates(text: str) -> list[str]:
    """The spans ``extract_json`` tries, in order and without repeats: the object after
    ``JSON:``, the first fenced objects, then the last top-level objects, last first."""
    closes = _brace_pairs(text)
    out = []
    marker = re.search(r"JSON\s*:\s*", text)
    if marker:
        out.append(_balanced(text, marker.end(), closes))
    out += _fenced_objects(text)
    out += reversed(_top_level_objects(text, closes))
    return list(dict.fromkeys(c for c in out if c))


def _fenced_objects(text: str, limit: int = _MAX_CANDIDATES) -> list[str]:
    """The first ``limit`` objects in code fences: from an opening fence (optionally
    ``json``) and ``{`` to the first ``}`` that a closing fence follows. Each part of the text
    is searched once (a regex with a lazy ``.*?`` between the fences rescans the rest of the
    text from every opening fence)."""
    out: list[str] = []
    pos = 0
    while len(out) < limit:
        opening = _FENCE_OPEN.search(text, pos)
        closing = opening and _FENCE_CLOSE.search(text, opening.end())
        if not opening or not closing:  # no closing fence after this one: none after a later
            break
        out.append(text[opening.end() - 1 : closing.start() + 1])
        pos = closing.end()
    return out


def _top_level_objects(text: str, closes: dict[int, int],
                       limit: int = _MAX_CANDIDATES) -> list[str]:
    """The last ``limit`` balanced ``{...}`` spans not nested in one another, left to right;
    a brace that is never closed is passed over."""
    spans: deque[tuple[int, int]] = deque(maxlen=limit)
    end = -1
    for begin in sorted(closes):
        if begin > end and closes[begin] != -1:
            end = closes[begin]
            spans.append((begin, end))
    return [text[begin : end + 1] for begin, end in spans]


def _balanced(text: str, start: int, closes: dict[int, int]) -> str:
    """The ``{...}`` starting at the first brace at or after ``start``, or ""."""
    begin = text.find("{", start)
    if begin == -1:
        return ""
    if begin not in closes:  # inside a string for both scans of the whole text
        closes = {}
        _pair_braces(text, begin, closes)
    end = closes[begin]
    return text[begin : end + 1] if end != -1 else ""


def _brace_pairs(text: str) -> dict[int, int]:
    """``{open brace: its closing brace, or -1}``, each as a scan for balanced braces that
    starts at that brace (tracking strings from there) would find it.

    One scan settles every brace it meets outside a string. A second one, started at the first
    brace the first meets inside a string, reads quotes the opposite way until an escaped
    quote brings the two into step: together they settle every brace when the prose has no
    backslashes; a brace both meet inside a string is left out. (Restarting a scan at every
    unclosed brace instead is quadratic in the length of the text.)"""
    closes: dict[int, int] = {}
    first = text.find("{")
    if first != -1:
        inside = _pair_braces(text, first, closes)
        if inside != -1:
            _pair_braces(text, inside, closes)
    return closes


def _pair_braces(text: str, start: int, closes: dict[int, int]) -> int:
    """Record in ``closes`` the pairs that one scan from ``start`` finds; return the first brace
    it meets inside a string, or -1."""
    stack: list[int] = []
    inside = -1
    for token in _JSON_TOKEN.finditer(text, start):
        at = token.start()
        if text[at] == "{":
            stack.append(at)
            closes[at] = -1
        elif text[at] == "}":
            if stack:
                closes[stack.pop()] = at
        elif inside == -1:
            inside = text.find("{", at, token.end())
    return inside


def _strip_trailing_commas(candidate: str) -> str:
    return re.sub(r",\s*([}\]])", r"\1", candidate)


def _sections(text: str) -> dict[str, str]:
    """The text under each heading (or known label), keyed by the lower-cased title."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        title, inline = _section_title(line)
        if title is None:
            if current is not None:
                current.append(line)
            continue
        current = out.setdefault(title, [])
        if inline:
            current.append(inline)
    sections = {title: "\n".join(lines).strip() for title, lines in out.items()}
    return sections if set(_KNOWN_SECTIONS) & set(sections) else {}


def _section_title(line: str) -> tuple[str | None, str]:
    """``(title, text on the same line)`` when ``line`` starts a section, else ``(None, "")``."""
    heading = _HEADING_START.match(line)
    titled = _titled(line[heading.end():]) if heading else None
    if titled:
        return _canonical(titled[0]), titled[2]
    stripped = line.strip()
    bold = stripped.startswith(("**", "__"))
    titled = _titled(stripped.replace("**", "").replace("__", ""))
    if titled and (bold or titled[1]) and _canonical(titled[0]) in _KNOWN_SECTIONS:
        return _canonical(titled[0]), titled[2]
    return None, ""


def _titled(text: str) -> tuple[str, bool, str] | None:
    """``(title, has a colon, inline text)`` when ``text`` is ``Title`` or ``Title: inline``
    (a title of letters and spaces), else None."""
    title = _TITLE.match(text)
    if title is None:
        return None
    rest = text[title.end():].lstrip()
    if not rest:
        return title.group(), False, ""
    if rest[0] != ":":
        return None
    return title.group(), True, rest[1:].strip()


def _canonical(title: str) -> str:
    title = re.sub(r"\s+", " ", title.strip().lower())
    return _SECTION_ALIASES.get(title, title)


def _dict_from_sections(sections: dict[str, str]) -> dict[str, Any]:
    changes = []
    for line in sections.get("proposed changes", "").splitlines():
        m = _CHANGE_LINE.match(line)
        if m:
            changes.append([m["param"], m["direction"], m["magnitude"] or "medium",
                            _rationale(m["rationale"])])
    return {
        "diagnosis": sections.get("diagnosis", ""),
        "param_interactions": _lines(sections.get("parameter interactions", "")),
        "proposed_changes": changes,
        "structural_insights": _lines(sections.get("structural insights", "")),
        "confidence": sections.get("confidence"),
    }


def _rationale(rest: str) -> str:
    """The rest of a change line without a closing ")" and the quotes around it."""
    rest = rest.rstrip()
    return rest.removesuffix(")").strip().strip('"“”')


def _lines(block: str) -> list[str]:
    items = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip() for line in block.splitlines()]
    return [i for i in items if i and not i.startswith("#")]


def _changes(raw: Any) -> tuple[list[ProposedChange], int]:
    if isinstance(raw, dict):
        raw = [[k, *v] if isinstance(v, list) else {"param": k, **v} if isinstance(v, dict)
               else [k, v] for k, v in raw.items()]
    if not isinstance(raw, list):
        return [], 0
    out, dropped = [], max(len(raw) - _MAX_PROPOSALS, 0)
    for item in raw[:_MAX_PROPOSALS]:
        change = _change(item)
        if change is None:
            dropped += 1
        else:
            out.append(change)
    return out, dropped


def _change(item: Any) -> ProposedChange | None:
    if isinstance(item, list | tuple):
        item = dict(zip(("param", "direction", "magnitude", "rationale"), item, strict=False))
    if not isinstance(item, dict):
        return None
    fields = {k: str(v).strip().lower() if k in ("direction", "magnitude") else v
              for k, v in item.items() if k in ("param", "direction", "magnitude", "rationale")}
    if isinstance(fields.get("param"), str):  # "Focus_Decay", "`focus_decay`"
        fields["param"] = fields["param"].strip().strip("`*'\"").lower()
    if "direction" in fields:
        fields["direction"] = _DIRECTION_SYNONYMS.get(fields["direction"], fields["direction"])
    if fields.get("magnitude") in (None, "", "none"):
        fields.pop("magnitude", None)
    try:
        return ProposedChange.model_validate(fields)
    except ValidationError:
        return None


def _confidence(raw: Any) -> float | None:
    """A confidence in [0, 1] from a number or text like "0.7 — because" or "70%"."""
    if raw is None:
        return 0.5
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        value = float(raw)
    else:
        text = str(raw)
        scale = _SCALE.search(text)  # "7/10", "0.8 / 1"
        if scale:
            return _in_unit(float(scale["value"]) / float(scale["of"]))
        m = _NUMBER.search(text)
        if not m:
            return None
        token = m.group(0)
        value = float(token.rstrip("%")) / (100 if token.endswith("%") else 1)
    return _in_unit(value)


def _in_unit(value: float) -> float | None:
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else None


def _strings(raw: Any) -> list[str]:
    if isinstance(raw, str):
        raw = _lines(raw)
    if not isinstance(raw, list):
        return []
    return [str(x).strip()[:4_000] for x in raw if str(x).strip()][:50]
