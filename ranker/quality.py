"""ripmap-train's commit-quality weight: how much a commit's co-changes say about relevance."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath

MAX_QUALITY = 2.0
MIN_QUALITY = 0.1
_WORDS = re.compile(r"[a-z]+")


def message_weight(subject: str, is_merge: bool) -> float:
    """Weight from the subject: fix ×1.5, else feat/implement/add ×1.2, else refactor/rename ×0.6;
    wip/save/tmp/checkpoint ×0.2; merge ×0.3; format/lint/prettier → 0 (skip).

    Words are matched whole or as prefixes (``formatting``), not as substrings: ripmap's
    ``contains("save")`` also hits "unsaved"; ``contains("format")`` hits "information".
    """
    text = subject.lower()
    words = _WORDS.findall(text)
    first = words[0] if words else ""

    def has(*prefixes: str) -> bool:
        return any(w.startswith(p) for w in words for p in prefixes)

    if has("format", "lint", "prettier") or text.startswith("style:"):
        return 0.0
    weight = 1.0
    if first.startswith("fix") or has("bugfix", "hotfix"):
        weight *= 1.5
    elif first.startswith("feat") or first == "add" or has("implement"):
        weight *= 1.2
    elif first.startswith("refactor") or has("rename"):
        weight *= 0.6
    if has("wip", "checkpoint", "tmp") or "save" in words:
        weight *= 0.2
    if is_merge or first == "merge":
        weight *= 0.3
    return weight


def size_weight(paths: Sequence[str], source_count: int) -> float:
    """Weight from the changed files: ≤6 ×1.2, ≤10 ×1.0, ≤15 ×0.7, more ×0.4, ≤1 → 0;
    ≥3 distinct directories ×1.2; source-file ratio < 0.3 ×0.5."""
    n = len(paths)
    if n <= 1:
        return 0.0
    weight = 1.2 if n <= 6 else 1.0 if n <= 10 else 0.7 if n <= 15 else 0.4
    if len({str(PurePosixPath(p).parent) for p in paths}) >= 3:
        weight *= 1.2
    if source_count / n < 0.3:
        weight *= 0.5
    return weight


def commit_quality(subject: str, is_merge: bool, paths: Sequence[str], source_count: int) -> float:
    """min(2, message weight × size weight); callers skip commits under ``MIN_QUALITY``."""
    return min(MAX_QUALITY, message_weight(subject, is_merge) * size_weight(paths, source_count))
