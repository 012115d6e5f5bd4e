"""How one proposal moves a parameter on its own (presets, previews), never to zero.

The seed used 1 ± {0.1, 0.3, 1.0}: "decrease large" multiplied by 0 and destroyed the
parameter. Here a decrease is the reciprocal of the increase of the same magnitude
(the log-space steps of ``state.consensus``), so every step can be undone.
"""

from __future__ import annotations

import math

from schemas.episode import Direction, ProposedChange
from schemas.params import PARAM_SPECS, ParameterPoint
from state.consensus import LOG_STEP


def factor(change: ProposedChange) -> float:
    """The multiplier a change applies: x1.1 / x1.3 / x2 up, their reciprocals down."""
    sign = 1.0 if change.direction is Direction.INCREASE else -1.0
    return math.exp(sign * LOG_STEP[change.magnitude])


def apply(params: ParameterPoint, changes: list[ProposedChange]) -> ParameterPoint:
    """Apply changes one after another, each clamped to the parameter's safe range."""
    values = params.as_floats()
    for change in changes:
        spec = PARAM_SPECS[change.param]
        values[change.param] = spec.clamp(values[change.param] * factor(change))
    return ParameterPoint.model_validate(values)


def first_per_param(changes: list[ProposedChange]) -> list[ProposedChange]:
    """Keep the first change proposed for each parameter."""
    seen: dict[str, ProposedChange] = {}
    for change in changes:
        seen.setdefault(change.param, change)
    return list(seen.values())
