"""Names and configuration of the overhead baseline (``bench.bare_app``), importable
without configuring a Celery app.

The baseline is a bare Celery app whose chain is no-op task A, then no-op task B.

``celery -A bench.bare_app worker -Q <prefix>_a,<prefix>_b``. It uses the service's own
Celery configuration (same broker options, acks, prefetch, task events) so the comparison
isolates what the service's code adds; ``RIPMAP_BENCH_TASK_EVENTS=0`` turns task events off
to show what they cost. B counts completed chains in one INCR, the least a benchmark can
observe.
"""

from __future__ import annotations

from typing import Any

from schemas.settings import get_settings
from worker.config import celery_config

TASK_A = "bench.bare.a"
TASK_B = "bench.bare.b"


def queues(prefix: str) -> tuple[str, str]:
    """The queues of task A and task B for one baseline variant."""
    return f"{prefix}_a", f"{prefix}_b"


def done_key(prefix: str) -> str:
    """The counter task B increments."""
    return f"bench:{prefix}:done"


def config(prefix: str, events: bool) -> dict[str, Any]:
    """The service's Celery settings, routed to this variant's queues."""
    conf = celery_config(get_settings())
    conf.pop("beat_schedule")
    queue_a, queue_b = queues(prefix)
    conf.update(task_default_queue=queue_a,
                task_routes={TASK_A: {"queue": queue_a}, TASK_B: {"queue": queue_b}})
    if not events:
        conf.update(worker_send_task_events=False, task_send_sent_event=False)
    return conf
