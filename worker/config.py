"""Celery configuration, derived from the one Settings object."""

from __future__ import annotations

from typing import Any

from schemas.settings import Settings
from schemas.tasks import EPISODE_QUEUE, TASK_QUEUES
from worker.schedule import beat_schedule


def celery_config(settings: Settings) -> dict[str, Any]:
    """Everything Celery reads, as a dict for ``app.conf.update``."""
    transport = {"visibility_timeout": settings.visibility_timeout}
    return {
        "broker_url": settings.broker,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport,
        # Celery reads the visibility timeout in three places; all must agree, and all
        # exceed the worst-case episode so a live task is never redelivered.
        "result_backend_transport_options": transport,
        "visibility_timeout": settings.visibility_timeout,
        # No result backend: outcomes live in the state store, which the CLI and API read.
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # At-least-once: a message is acked after its task ran; a killed worker's message
        # is redelivered, and every task's effect is idempotent.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_soft_shutdown_timeout": 30.0,
        "task_default_queue": EPISODE_QUEUE,
        "task_routes": {name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        "task_soft_time_limit": settings.visibility_timeout - 120,
        "task_time_limit": settings.visibility_timeout - 60,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "beat_schedule": beat_schedule(settings),
    }
