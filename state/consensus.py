"""One bounded step per parameter version, from the votes of the episodes that reasoned on it.

Each vote moves a parameter by its magnitude in log space (small ln 1.1, medium ln 1.3,
large ln 2), signed by direction and weighted by the episode's confidence; the step is
the confidence-weighted mean over *all* voting episodes (an episode that leaves a
parameter alone votes to keep it), so opposite directions cancel and a lone voice moves
little. Sums use ``math.fsum`` (exactly rounded), so the result does not depend on the
order in which concurrent votes arrived.
"""

from __future__ import annotations

import math

from schemas.episode import Direction, Magnitude
from schemas.params import PARAM_SPECS, ParameterPoint
from schemas.versions import Vote

LOG_STEP = {
    Magnitude.SMALL: math.log(1.1),
    Magnitude.MEDIUM: math.log(1.3),
    Magnitude.LARGE: math.log(2.0),
}


def log_steps(votes: list[Vote], max_factor: float) -> dict[str, float]:
    """Parameter -> bounded log step; parameters with no net vote are left out."""
    total = math.fsum(v.confidence for v in votes)
    if total <= 0:
        return {}
    terms: dict[str, list[float]] = {}
    for vote in votes:
        for change in vote.changes:
            sign = 1.0 if change.direction is Direction.INCREASE else -1.0
            terms.setdefault(change.param, []).append(vote.confidence * sign *
                                                      LOG_STEP[change.magnitude])
    limit = math.log(max_factor)
    steps = {p: max(-limit, min(limit, math.fsum(t) / total)) for p, t in terms.items()}
    return {p: s for p, s in sorted(steps.items()) if s != 0.0}


def step(params: ParameterPoint, votes: list[Vote], max_factor: float) -> tuple[
        ParameterPoint, dict[str, float]]:
    """The new parameters and the factor actually applied to each moved parameter."""
    values = params.as_floats()
    factors = {}
    for name, log_step in log_steps(votes, max_factor).items():
        spec = PARAM_SPECS[name]
        new = spec.clamp(values[name] * math.exp(log_step))
        if new != values[name]:
            factors[name] = new / values[name] if values[name] else math.inf
            values[name] = new
    return ParameterPoint.model_validate(values), {k: round(v, 6) for k, v in factors.items()
                                                   if math.isfinite(v)}
