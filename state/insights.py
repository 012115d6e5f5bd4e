"""Insight text normalised, so the same statement in other words of form counts once."""

from __future__ import annotations

import hashlib
import re


def normalise(text: str) -> str:
    """Insight text reduced to what makes two statements the same insight."""
    text = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", text.lower())
    text = re.sub(r"[`*_\"'“”‘’]", "", text)
    return re.sub(r"\s+", " ", text).strip(" .;:!")


def items(texts: list[str]) -> list[tuple[str, str]]:
    """``(hash of normalised text, text)`` for each distinct insight, first wording kept."""
    seen: dict[str, str] = {}
    for text in texts:
        norm = normalise(text)
        if norm:
            seen.setdefault(hashlib.sha1(norm.encode()).hexdigest()[:16], text.strip())
    return list(seen.items())
