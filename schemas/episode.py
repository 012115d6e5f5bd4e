"""What a reasoner answers, and the episode record built from it."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from schemas.limits import MAX_ITEMS, MAX_REASONING_CHARS, MAX_TEXT_CHARS
from schemas.params import PARAM_NAMES, ParameterPoint

Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]
Confidence = Annotated[float, Field(ge=0.0, le=1.0)]
_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_strip_whitespace=True)


class Direction(StrEnum):
    """Which way a parameter should move."""

    INCREASE = "increase"
    DECREASE = "decrease"


class Magnitude(StrEnum):
    """How far: the seed's small / medium / large steps."""

    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"


class ProposedChange(BaseModel):
    """One proposed move of one parameter, with the reason for it."""

    model_config = _STRICT

    param: str
    direction: Direction
    magnitude: Magnitude = Magnitude.MEDIUM
    rationale: Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)] = ""

    @field_validator("param")
    @classmethod
    def _known_param(cls, value: str) -> str:
        if value not in PARAM_NAMES:
            raise ValueError(f"unknown parameter {value!r}")
        return value


class ReasonerAnswer(BaseModel):
    """The structured answer a reasoner gives about one batch of failures."""

    model_config = _STRICT

    diagnosis: Annotated[str, StringConstraints(max_length=MAX_REASONING_CHARS)] = ""
    param_interactions: Annotated[list[Text], Field(max_length=MAX_ITEMS)] = []
    proposed_changes: Annotated[list[ProposedChange], Field(max_length=len(PARAM_NAMES))] = []
    structural_insights: Annotated[list[Text], Field(max_length=MAX_ITEMS)] = []
    confidence: Confidence = 0.5

    @field_validator("proposed_changes")
    @classmethod
    def _one_change_per_param(cls, value: list[ProposedChange]) -> list[ProposedChange]:
        seen = [c.param for c in value]
        duplicates = sorted({p for p in seen if seen.count(p) > 1})
        if duplicates:
            raise ValueError(f"more than one change for {', '.join(duplicates)}")
        return value


class Usage(BaseModel):
    """Tokens one LLM call (or a reasoning with repairs) consumed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    model: str = ""


class ReasoningEpisode(BaseModel):
    """One reasoning pass over one batch, as merged into the scratchpad."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    episode_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    batch_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    repo: str = "unknown"
    status: Literal["ok", "unparsable"] = "ok"
    params: ParameterPoint
    params_version: Annotated[int, Field(ge=0)] = 0
    reasoning: Annotated[str, StringConstraints(max_length=MAX_REASONING_CHARS)] = ""
    answer: ReasonerAnswer = Field(default_factory=ReasonerAnswer)
    failure_signatures: Annotated[list[Text], Field(max_length=MAX_ITEMS)] = []
    dropped_proposals: Annotated[int, Field(ge=0)] = 0
    reasoner: str
    usage: Usage = Field(default_factory=Usage)
    started_at: float
    finished_at: float
    failure_count: Annotated[int, Field(ge=1)] = 1
    mean_ndcg: Confidence = 0.0
