"""Distilled operator wisdom: presets, heuristics, warnings, intuitions."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.episode import Text, Usage
from schemas.limits import MAX_REASONING_CHARS
from schemas.params import ParameterPoint

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_strip_whitespace=True)
Name = Annotated[str, StringConstraints(min_length=1, max_length=80)]


class Preset(BaseModel):
    """A named full configuration and when to use it."""

    model_config = _STRICT

    name: Name
    params: ParameterPoint
    when_to_use: Text


class Heuristic(BaseModel):
    """``if CONDITION: ADJUSTMENT "rationale"``."""

    model_config = _STRICT

    condition: Text
    adjustment: Text
    rationale: Annotated[str, StringConstraints(max_length=4_000)] = ""


class WisdomDraft(BaseModel):
    """What a reasoner produces when distilling (no bookkeeping fields)."""

    model_config = _STRICT

    presets: Annotated[list[Preset], Field(max_length=8)] = []
    heuristics: Annotated[list[Heuristic], Field(max_length=30)] = []
    warnings: Annotated[list[Text], Field(max_length=30)] = []
    intuitions: Annotated[str, StringConstraints(max_length=MAX_REASONING_CHARS)] = ""


class Wisdom(WisdomDraft):
    """A versioned distillation of the scratchpad."""

    version: Annotated[int, Field(ge=1)]
    created_at: float
    episodes_seen: Annotated[int, Field(ge=0)]
    reasoner: str
    usage: Usage = Field(default_factory=Usage)

    def to_markdown(self) -> str:
        """The seed's "Distilled Operator Wisdom" document."""
        lines = [
            "# Distilled Operator Wisdom",
            "",
            f"Version {self.version}, from {self.episodes_seen} episodes, by {self.reasoner}.",
            "",
            "## Presets",
        ]
        for p in self.presets:
            values = ", ".join(f"{k}: {v:g}" for k, v in p.params.as_floats().items())
            lines.append(f"- **{p.name}**: {{{values}}} \"{p.when_to_use}\"")
        lines += ["", "## Adaptive Heuristics"]
        lines += [f"- if {h.condition}: {h.adjustment} \"{h.rationale}\"" for h in self.heuristics]
        lines += ["", "## Warnings"]
        lines += [f"- ⚠ WARNING: {w}" for w in self.warnings]
        lines += ["", "## Intuitions", "", self.intuitions or "_None yet._", ""]
        return "\n".join(lines)
