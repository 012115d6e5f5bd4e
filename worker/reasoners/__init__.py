"""Reasoners behind one interface, chosen by ``RIPMAP_REASONER``."""

from __future__ import annotations

import threading

from schemas.settings import Settings
from worker.reasoners.base import Reasoner

_cache: dict[tuple[str, int], Reasoner] = {}
_lock = threading.Lock()


def choose(settings: Settings) -> str:
    """The reasoner name ``auto`` resolves to: the API when a key is set, else rules."""
    if settings.reasoner != "auto":
        return settings.reasoner
    return "anthropic" if settings.anthropic_api_key else "heuristic"


def get_reasoner(settings: Settings) -> Reasoner:
    """One reasoner per process and configuration (API clients are costly to build)."""
    name = choose(settings)
    key = (name, hash(repr(settings)) ^ hash(_secret(settings)))
    with _lock:
        if key not in _cache:
            _cache[key] = _build(name, settings)
        return _cache[key]


def _secret(settings: Settings) -> str:
    key = settings.anthropic_api_key
    return key.get_secret_value() if key else ""


def _build(name: str, settings: Settings) -> Reasoner:
    # each reasoner is imported on demand: a worker loads only the one it runs
    if name == "heuristic":
        from worker.reasoners.heuristic import HeuristicReasoner

        return HeuristicReasoner()
    if name == "claude-cli":
        from worker.reasoners.claude_cli import ClaudeCliReasoner

        return ClaudeCliReasoner(timeout=settings.claude_cli_timeout_seconds)
    # on demand: anthropic's SDK is heavy, and a rule-based worker never loads it
    from worker.reasoners.anthropic_api import AnthropicReasoner

    return AnthropicReasoner(settings)
