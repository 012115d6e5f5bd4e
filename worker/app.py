"""The Celery app: ``celery -A worker.app worker``."""

from __future__ import annotations

from celery import Celery

from worker import kombu_patch, runtime
from worker.config import celery_config

kombu_patch.apply()
app = Celery("ripmap_optimizer", include=["worker.tasks"])
app.conf.update(celery_config(runtime.settings()))
