"""Builders of valid test data."""

from __future__ import annotations

import time
from typing import Any

from schemas.episode import ReasonerAnswer, ReasoningEpisode
from schemas.params import ParameterPoint


def failure(i: int = 0, **overrides: Any) -> dict[str, Any]:
    """A valid failure record; ``i`` makes it distinct."""
    record: dict[str, Any] = {
        "query": f"auth token {i}",
        "seed_file": f"src/auth/login{i}.rs",
        "expected_top": [f"src/auth/session{i}.rs", "src/auth/token.rs"],
        "actual_top": ["src/main.rs", "README.md", "Cargo.toml"],
        "ndcg": 0.2 + (i % 5) / 20,
        "commit_message": f"fix token refresh #{i}",
        "repo_context": {"name": "example-app", "file_count": 150},
    }
    record.update(overrides)
    return record


def episode(i: int = 0, answer: dict[str, Any] | None = None, **overrides: Any) -> ReasoningEpisode:
    """A valid merged-episode record."""
    now = time.time()
    fields: dict[str, Any] = {
        "episode_id": f"ep{i}",
        "batch_id": f"ep{i}",
        "params": ParameterPoint(),
        "answer": ReasonerAnswer.model_validate(answer or {
            "diagnosis": "d",
            "param_interactions": ["Low alpha + high chat boost = tunnel vision"],
            "proposed_changes": [
                {"param": "depth_weight_root", "direction": "decrease", "magnitude": "small"}],
            "structural_insights": [f"insight {i % 3}"],
            "confidence": 0.6,
        }),
        "failure_signatures": ["the seed file itself dominates the top ranks"],
        "reasoner": "test",
        "started_at": now,
        "finished_at": now,
    }
    fields.update(overrides)
    return ReasoningEpisode.model_validate(fields)
