"""The result of scoring one parameter point on one split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

DIGITS = 6


@dataclass(frozen=True)
class Evaluation:
    """Weighted NDCG@10 of a split with its 95 % bootstrap interval (whole commits resampled)."""

    split: str
    ndcg: float
    low: float
    high: float
    cases: int
    commits: int
    per_case: npt.NDArray[np.float64]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary with floats rounded to 6 digits (deterministic bytes)."""
        return {
            "split": self.split,
            "ndcg": round(self.ndcg, DIGITS),
            "low": round(self.low, DIGITS),
            "high": round(self.high, DIGITS),
            "cases": self.cases,
            "commits": self.commits,
        }


@dataclass(frozen=True)
class Effect:
    """Tuning NDCG when one parameter is stepped down and up, the others at the point."""

    name: str
    value: float
    low_value: float
    high_value: float
    ndcg_low: float
    ndcg_high: float
    inert: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, rounded."""
        return {
            "name": self.name,
            "value": self.value,
            "low_value": round(self.low_value, DIGITS),
            "high_value": round(self.high_value, DIGITS),
            "ndcg_low": round(self.ndcg_low, DIGITS),
            "ndcg_high": round(self.ndcg_high, DIGITS),
            "inert": self.inert,
        }


@dataclass(frozen=True)
class Sensitivity:
    """One-at-a-time effects of every parameter on the tuning split."""

    baseline: Evaluation
    effects: tuple[Effect, ...]

    @property
    def inert(self) -> tuple[str, ...]:
        """Parameters whose steps change no case's ranking."""
        return tuple(e.name for e in self.effects if e.inert)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, rounded."""
        return {
            "baseline": self.baseline.as_dict(),
            "effects": [e.as_dict() for e in self.effects],
            "inert": list(self.inert),
        }
