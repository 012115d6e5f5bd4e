"""Validation errors as short messages that name the field."""

from __future__ import annotations

from pydantic import ValidationError


def describe(exc: ValidationError, prefix: str = "") -> list[str]:
    """One ``path: message`` line per problem, e.g. ``failures[2].ndcg: ...``."""
    lines = []
    for err in exc.errors(include_url=False):
        path = prefix
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        lines.append(f"{path or '(root)'}: {err['msg']}")
    return lines
