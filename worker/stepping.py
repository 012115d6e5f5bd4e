"""How a proposal moves a parameter: the seed's multipliers, never to zero, clamped."""

from __future__ import annotations

from schemas.episode import Direction, Magnitude, ProposedChange
from schemas.params import PARAM_SPECS, ParameterPoint

# The seed used 1 ± {0.1, 0.3, 1.0}: "decrease large" multiplied by 0 and destroyed the
# parameter. Decreases are the reciprocal-ish halving instead, so every step is undoable.
FACTORS: dict[tuple[Direction, Magnitude], float] = {
    (Direction.INCREASE, Magnitude.SMALL): 1.1,
    (Direction.INCREASE, Magnitude.MEDIUM): 1.3,
    (Direction.INCREASE, Magnitude.LARGE): 2.0,
    (Direction.DECREASE, Magnitude.SMALL): 0.9,
    (Direction.DECREASE, Magnitude.MEDIUM): 0.7,
    (Direction.DECREASE, Magnitude.LARGE): 0.5,
}


def factor(change: ProposedChange) -> float:
    """The multiplier a change applies."""
    return FACTORS[(change.direction, change.magnitude)]


def step(change: ProposedChange) -> tuple[str, float, float, float, float]:
    """``(param, factor, floor, ceiling, default)``, as the merge script applies it."""
    spec = PARAM_SPECS[change.param]
    return (change.param, factor(change), spec.floor, spec.ceiling, spec.default)


def apply(params: ParameterPoint, changes: list[ProposedChange]) -> ParameterPoint:
    """Apply changes to a parameter point in Python (the merge script's twin, for tests)."""
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
