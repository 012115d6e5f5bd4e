"""Beat entries, each with the reason it exists."""

from __future__ import annotations

from typing import Any

from schemas.settings import Settings
from schemas.tasks import DISTILL, FLUSH_BUFFERS, MERGE_QUEUE, STEP_PARAMS, SWEEP_OPEN
from state.ledger import CONFIRM_SECONDS


def beat_schedule(settings: Settings) -> dict[str, Any]:
    """The periodic tasks celery beat sends."""
    return {
        # Turn what episodes merged into wisdom; the task skips itself when nothing is new.
        "distill": {
            "task": DISTILL,
            "schedule": settings.distill_interval_seconds,
            "options": {"queue": MERGE_QUEUE, "expires": settings.distill_interval_seconds},
        },
        # Step parameters on votes that waited too long for a quorum (a quiet fleet).
        "step-params": {
            "task": STEP_PARAMS,
            "schedule": max(5.0, settings.consensus_max_wait_seconds / 4),
            "options": {"queue": MERGE_QUEUE, "expires": settings.consensus_max_wait_seconds},
        },
        # Enqueue partial push batches before they wait longer than push_max_wait_seconds.
        "flush-push-buffers": {
            "task": FLUSH_BUFFERS,
            "schedule": settings.push_max_wait_seconds / 2,
            "options": {"queue": MERGE_QUEUE, "expires": settings.push_max_wait_seconds / 2},
        },
        # Send again batches the broker lost (a worker killed as it took the message).
        "sweep-open-batches": {
            "task": SWEEP_OPEN,
            "schedule": max(CONFIRM_SECONDS, settings.ledger_check_after_seconds / 4),
            "options": {"queue": MERGE_QUEUE, "expires": settings.ledger_check_after_seconds},
        },
    }
