"""Versioned parameters: every change has a parent, a reason and its evidence."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.episode import Confidence, Direction, Magnitude
from schemas.params import ParameterPoint

Score = Annotated[float, Field(ge=0.0, le=1.0)]
_FROZEN = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class VotedChange(BaseModel):
    """One episode's proposal as it entered a consensus step."""

    model_config = _FROZEN

    param: str
    direction: Direction
    magnitude: Magnitude
    rationale: Annotated[str, Field(max_length=300)] = ""


class Vote(BaseModel):
    """An episode's proposals for the version it reasoned against."""

    model_config = _FROZEN

    episode_id: str
    confidence: Confidence
    changes: list[VotedChange]


Reason = Literal["initial", "consensus", "rollback", "manual"]


class ParamVersion(BaseModel):
    """Parameter version ``version``: values, parent, why, and which episodes produced it."""

    model_config = _FROZEN

    version: Annotated[int, Field(ge=0)]
    parent: int | None = None
    params: ParameterPoint
    reason: Reason
    factors: dict[str, float] = {}
    provenance: list[Vote] = []
    note: str = ""
    created_at: float = 0.0


class Evaluation(BaseModel):
    """A ranking service's measurement of one version: mean NDCG over ``cases`` cases."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    version: Annotated[int, Field(ge=0)]
    mean_ndcg: Annotated[float, Field(ge=0.0, le=1.0)]
    cases: Annotated[int, Field(ge=1, le=10_000_000)]
    # a redelivered report with the same id counts once; the producer fills in a fresh one
    evaluation_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    per_case: Annotated[list[Score], Field(max_length=100_000)] = []


class VersionScore(BaseModel):
    """The evidence gathered on one version."""

    model_config = _FROZEN

    version: int
    cases: int = 0
    mean_ndcg: float | None = None
