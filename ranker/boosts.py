"""The multiplicative boosts of a file's score, one formula per function, over arrays."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def flag_boost(flag: npt.NDArray[np.bool_], boost: float) -> F64:
    """``boost`` where flagged, else 1."""
    return np.where(flag, boost, 1.0)


def recency(days: F64, max_boost: float, decay_days: float) -> F64:
    """1 + (max_boost − 1)·exp(−days / decay_days); a file not changed in the window has
    days = ∞ and recency 1."""
    return 1.0 + (max_boost - 1.0) * np.exp(-days / decay_days)


def churn(changes: F64, threshold: float, max_boost: float) -> F64:
    """1 + ln(1 + max(0, changes − threshold))·(max_boost − 1)/5, bounded by max_boost
    (from above when max_boost ≥ 1, from below when it is < 1); no excess churn → 1."""
    value = 1.0 + np.log1p(np.maximum(0.0, changes - threshold)) * (max_boost - 1.0) / 5.0
    return np.clip(value, min(1.0, max_boost), max(1.0, max_boost))


def focus_expansion(hops: npt.NDArray[np.int8], boost: float, decay: float,
                    max_hops: float) -> F64:
    """max(1, boost·decay^h) for files first reached at hop h ≤ max_hops (the focus set
    itself is hop 0, weight 1, as in ripmap's expand_via_graph), else 1."""
    h = hops.astype(np.float64)
    reached = h <= max_hops
    return np.where(reached, np.maximum(1.0, boost * decay ** np.where(reached, h, 0.0)), 1.0)
