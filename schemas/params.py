"""The 17 ranking hyperparameters of ripmap, with defaults, bounds and meanings."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


@dataclass(frozen=True)
class ParamSpec:
    """Default, validity bounds and safe step range of one parameter.

    ``low``/``high`` are what validation accepts (open when ``low_open``/``high_open``);
    ``floor``/``ceiling`` are the closed range a proposal step is clamped to, always
    inside the valid range and with ``floor > 0`` so multiplicative steps can recover.
    """

    default: float
    low: float
    high: float
    floor: float
    ceiling: float
    meaning: str
    low_open: bool = False
    high_open: bool = False

    def accepts(self, value: float) -> bool:
        """True when ``value`` is finite and inside the valid bounds."""
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def bounds_text(self) -> str:
        """Bounds in interval notation, e.g. ``(0, 1)``."""
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"{left}{self.low:g}, {self.high:g}{right}"

    def clamp(self, value: float) -> float:
        """Clamp a stepped value into the safe range."""
        return min(max(value, self.floor), self.ceiling)


PARAM_SPECS: dict[str, ParamSpec] = {
    "pagerank_alpha": ParamSpec(
        0.85, 0.0, 1.0, 0.05, 0.99,
        "PageRank damping: structure vs personalization", low_open=True, high_open=True,
    ),
    "pagerank_chat_multiplier": ParamSpec(
        100.0, 0.0, 10_000.0, 0.1, 10_000.0, "personalization weight of files in the chat context"
    ),
    "depth_weight_root": ParamSpec(1.0, 0.0, 100.0, 0.001, 100.0, "weight of root-level files"),
    "depth_weight_moderate": ParamSpec(0.5, 0.0, 100.0, 0.001, 100.0, "weight of mid-depth files"),
    "depth_weight_deep": ParamSpec(0.1, 0.0, 100.0, 0.001, 100.0, "weight of deeply nested files"),
    "depth_weight_vendor": ParamSpec(
        0.01, 0.0, 100.0, 0.0001, 100.0, "weight of vendor/dependency files"
    ),
    "boost_mentioned_ident": ParamSpec(
        10.0, 0.0, 1_000.0, 0.01, 1_000.0, "boost for identifiers mentioned in the query"
    ),
    "boost_mentioned_file": ParamSpec(
        5.0, 0.0, 1_000.0, 0.01, 1_000.0, "boost for files mentioned in the query"
    ),
    "boost_chat_file": ParamSpec(
        20.0, 0.0, 1_000.0, 0.01, 1_000.0, "boost for files in the current chat context"
    ),
    "boost_temporal_coupling": ParamSpec(
        3.0, 0.0, 1_000.0, 0.01, 1_000.0, "boost for files that change together in git"
    ),
    "boost_focus_expansion": ParamSpec(
        5.0, 0.0, 1_000.0, 0.01, 1_000.0,
        "boost for files reached by graph expansion from the focus",
    ),
    "git_recency_decay_days": ParamSpec(
        30.0, 0.0, 3_650.0, 0.5, 3_650.0, "half-life of the recency weighting, in days",
        low_open=True,
    ),
    "git_recency_max_boost": ParamSpec(10.0, 0.0, 1_000.0, 0.01, 1_000.0, "maximum recency boost"),
    "git_churn_threshold": ParamSpec(
        10.0, 0.0, 10_000.0, 1.0, 10_000.0, "commits before a file counts as high churn"
    ),
    "git_churn_max_boost": ParamSpec(5.0, 0.0, 1_000.0, 0.01, 1_000.0, "maximum churn boost"),
    "focus_decay": ParamSpec(
        0.5, 0.0, 1.0, 0.01, 1.0, "decay per hop of focus expansion", low_open=True
    ),
    "focus_max_hops": ParamSpec(2.0, 0.0, 10.0, 0.5, 10.0, "maximum expansion radius, in hops"),
}

PARAM_NAMES: tuple[str, ...] = tuple(PARAM_SPECS)


class ParameterPoint(BaseModel):
    """One full, validated configuration of the 17 ranking hyperparameters."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    pagerank_alpha: float = 0.85
    pagerank_chat_multiplier: float = 100.0
    depth_weight_root: float = 1.0
    depth_weight_moderate: float = 0.5
    depth_weight_deep: float = 0.1
    depth_weight_vendor: float = 0.01
    boost_mentioned_ident: float = 10.0
    boost_mentioned_file: float = 5.0
    boost_chat_file: float = 20.0
    boost_temporal_coupling: float = 3.0
    boost_focus_expansion: float = 5.0
    git_recency_decay_days: float = 30.0
    git_recency_max_boost: float = 10.0
    git_churn_threshold: float = 10.0
    git_churn_max_boost: float = 5.0
    focus_decay: float = 0.5
    focus_max_hops: float = 2.0

    @model_validator(mode="after")
    def _within_bounds(self) -> ParameterPoint:
        for name, spec in PARAM_SPECS.items():
            value = getattr(self, name)
            if not spec.accepts(value):
                raise ValueError(f"{name}={value!r} is outside {spec.bounds_text()}")
        return self

    def as_floats(self) -> dict[str, float]:
        """The parameters as a flat ``{name: value}`` dict (ripmap's params.json)."""
        return {name: float(getattr(self, name)) for name in PARAM_NAMES}

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> ParameterPoint:
        """Build from a flat mapping whose values may be strings (as Redis returns them)."""
        return cls.model_validate({k: float(v) for k, v in values.items()})
