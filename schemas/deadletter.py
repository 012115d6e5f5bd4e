"""A payload the service could not process, kept with the reason."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class DeadLetter(BaseModel):
    """What failed, why, how often it was tried, and the payload to retry it with."""

    model_config = ConfigDict(frozen=True)

    id: str
    task: str
    reason: str
    payload: Any
    attempts: int = 1
    created_at: float
