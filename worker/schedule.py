"""Beat entries, each with the reason it exists."""

from __future__ import annotations

from typing import Any

from schemas.settings import Settings
from schemas.tasks import DISTILL, MERGE_QUEUE


def beat_schedule(settings: Settings) -> dict[str, Any]:
    """The periodic tasks celery beat sends."""
    return {
        # Turn what episodes merged into wisdom; the task skips itself when nothing is new.
        "distill": {
            "task": DISTILL,
            "schedule": settings.distill_interval_seconds,
            "options": {"queue": MERGE_QUEUE, "expires": settings.distill_interval_seconds},
        },
    }
