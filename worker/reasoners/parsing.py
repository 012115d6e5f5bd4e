"""Free-text answers into validated answers: upstream's ``JSON:`` form or the seed's headings.

Used for reasoners without tool use (the ``claude`` CLI). Whatever the text says, only
proposals that validate (known parameter, direction, magnitude) survive; the rest are
counted as dropped.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import ValidationError

from schemas.episode import ProposedChange, ReasonerAnswer
from schemas.wisdom import WisdomDraft
from worker import stepping

# "## Title" or "## Title: inline text" (any title ends the previous section) ...
_HEADING = re.compile(r"^\s*#{1,4}\s*(?P<title>[A-Za-z][A-Za-z ]*?)\s*(?::\s*(?P<inline>.*?))?\s*$")
# ... or "**Title:** text", "**Title: text**", "Title: text" (known titles only)
_LABEL = re.compile(r"^(?P<title>[A-Za-z][A-Za-z ]*?)\s*(?:(?P<colon>:)\s*(?P<inline>.*?))?\s*$")
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
_CHANGE_LINE = re.compile(
    r"^[\s\-*•\d.)]*`?\*{0,2}(?P<param>[A-Za-z_]\w*)\*{0,2}`?\s*[:=\-–—]+\s*"
    r"(?P<direction>increase|decrease|raise|lower)\s*(?P<magnitude>small|medium|large)?"
    r"[\s:,\-–—(]*(?P<rationale>.*?)\)?\s*$",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?%?|nan|inf", re.IGNORECASE)
_SCALE = re.compile(r"(?P<value>\d+(?:\.\d+)?)\s*/\s*(?P<of>10|1|100)\b")
_DIRECTION_SYNONYMS = {"raise": "increase", "lower": "decrease"}


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
    elsewhere in the text is not mistaken for the answer)."""
    for candidate in _json_candidates(text):
        try:
            value = json.loads(_strip_trailing_commas(candidate))
        except ValueError:
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


def _json_candidates(text: str) -> list[str]:
    out = []
    marker = re.search(r"JSON\s*:\s*", text)
    if marker:
        out.append(_balanced(text, marker.end()))
    out += re.findall(r"```(?:json)?\s*(\{.*?\})\s*```", text, re.DOTALL)
    out += reversed(_top_level_objects(text))
    return [c for c in out if c]


def _top_level_objects(text: str, limit: int = 20) -> list[str]:
    """Balanced ``{...}`` spans not nested in one another, left to right."""
    out: list[str] = []
    start = text.find("{")
    while start != -1 and len(out) < limit:
        span = _balanced(text, start)
        if span:
            out.append(span)
            start = text.find("{", start + len(span))
        else:  # an unclosed brace in prose: look past it
            start = text.find("{", start + 1)
    return out


def _balanced(text: str, start: int) -> str:
    """The ``{...}`` starting at or after ``start``, braces balanced outside strings."""
    begin = text.find("{", start)
    depth, in_string, escaped = 0, False, False
    for i in range(max(begin, 0), len(text)):
        ch = text[i]
        if in_string:
            escaped = ch == "\\" and not escaped
            in_string = not (ch == '"' and not escaped)
        elif ch == '"':
            in_string = True
        elif ch in "{}":
            depth += 1 if ch == "{" else -1
            if depth == 0:
                return text[begin : i + 1]
    return ""


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
    m = _HEADING.match(line)
    if m:
        return _canonical(m["title"]), m["inline"] or ""
    stripped = line.strip()
    bold = stripped.startswith(("**", "__"))
    m = _LABEL.match(stripped.replace("**", "").replace("__", ""))
    if m and (bold or m["colon"]) and _canonical(m["title"]) in _KNOWN_SECTIONS:
        return _canonical(m["title"]), m["inline"] or ""
    return None, ""


def _canonical(title: str) -> str:
    title = re.sub(r"\s+", " ", title.strip().lower())
    return _SECTION_ALIASES.get(title, title)


def _dict_from_sections(sections: dict[str, str]) -> dict[str, Any]:
    changes = []
    for line in sections.get("proposed changes", "").splitlines():
        m = _CHANGE_LINE.match(line)
        if m:
            changes.append([m["param"], m["direction"], m["magnitude"] or "medium",
                            m["rationale"].strip().strip('"“”')])
    return {
        "diagnosis": sections.get("diagnosis", ""),
        "param_interactions": _lines(sections.get("parameter interactions", "")),
        "proposed_changes": changes,
        "structural_insights": _lines(sections.get("structural insights", "")),
        "confidence": sections.get("confidence"),
    }


def _lines(block: str) -> list[str]:
    items = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip() for line in block.splitlines()]
    return [i for i in items if i and not i.startswith("#")]


def _changes(raw: Any) -> tuple[list[ProposedChange], int]:
    if isinstance(raw, dict):
        raw = [[k, *v] if isinstance(v, list) else {"param": k, **v} if isinstance(v, dict)
               else [k, v] for k, v in raw.items()]
    if not isinstance(raw, list):
        return [], 0
    out, dropped = [], 0
    for item in raw:
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
