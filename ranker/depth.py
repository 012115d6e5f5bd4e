"""Depth classes of paths for the personalization vector."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

VENDOR_COMPONENTS = frozenset(
    {"node_modules", "vendor", "third_party", "__pycache__", "site-packages", ".git", "target"}
)
ROOT, MODERATE, DEEP, VENDOR = 0, 1, 2, 3
DEPTH_PARAMS = ("depth_weight_root", "depth_weight_moderate", "depth_weight_deep",
                "depth_weight_vendor")


def is_vendored(path: str) -> bool:
    """True when a whole component of ``path`` is a vendor directory (``a/target/x.rs``),
    not when a name merely contains one (``targets.py``)."""
    return not VENDOR_COMPONENTS.isdisjoint(path.split("/"))


def depth_class(path: str) -> int:
    """VENDOR, else by depth d = number of '/': ROOT (d ≤ 2), MODERATE (d ≤ 4), DEEP."""
    if is_vendored(path):
        return VENDOR
    depth = path.count("/")
    return ROOT if depth <= 2 else MODERATE if depth <= 4 else DEEP


def depth_classes(paths: Sequence[str]) -> npt.NDArray[np.int8]:
    """``depth_class`` of each path."""
    return np.array([depth_class(p) for p in paths], dtype=np.int8)
