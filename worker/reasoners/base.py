"""The one small interface every reasoner implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from schemas.episode import ReasonerAnswer, Usage
from schemas.failures import RankingFailure
from schemas.params import ParameterPoint
from schemas.scratchpad import ScratchpadSummary
from schemas.wisdom import WisdomDraft

Knowledge = dict[str, list[tuple[str, int]]]


@dataclass(frozen=True)
class VersionEvidence:
    """One recent parameter version as structured evidence: what it changed from its
    parent (``factors``: parameter -> multiplier actually applied) and its tuning NDCG
    (None until evaluated). ``reason`` is consensus, rollback, manual or initial."""

    version: int
    parent: int | None = None
    reason: str = "initial"
    factors: dict[str, float] = field(default_factory=dict)
    ndcg: float | None = None
    cases: int = 0


@dataclass(frozen=True)
class EpisodeRequest:
    """What a reasoner sees for one batch."""

    failures: list[RankingFailure]
    params: ParameterPoint
    signatures: dict[str, int]
    knowledge: Knowledge = field(default_factory=dict)
    params_version: int = 0
    trajectory: list[str] = field(default_factory=list)
    pending: dict[str, int] = field(default_factory=dict)
    # the same recent versions as ``trajectory``, structured, oldest first
    history: list[VersionEvidence] = field(default_factory=list)


@dataclass(frozen=True)
class ReasonerReply:
    """A reasoner's answer: ``answer`` is None when the raw text could not be parsed."""

    raw: str
    answer: ReasonerAnswer | None
    dropped: int = 0
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class DistillReply:
    """A distillation: ``draft`` is None when the raw text could not be parsed."""

    raw: str
    draft: WisdomDraft | None
    usage: Usage = field(default_factory=Usage)


class Reasoner(Protocol):
    """Turns failures into an answer, and a scratchpad into wisdom."""

    name: str

    def reason(self, request: EpisodeRequest) -> ReasonerReply:
        """Diagnose one batch and propose changes."""
        ...

    def distill(self, summary: ScratchpadSummary) -> DistillReply:
        """Distill the scratchpad's aggregates into wisdom."""
        ...


class PermanentReasonerError(Exception):
    """A failure that will fail again (bad request, auth): dead-letter, don't retry."""


class TransientReasonerError(Exception):
    """A failure that may succeed later (rate limit, overload, timeout): retry."""
