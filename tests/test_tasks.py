"""Registered task names are the wire contract: a rename orphans queued messages."""

import subprocess
import sys

from schemas import tasks
from schemas.settings import Settings
from tests.services import ROOT, worker_env
from worker.config import celery_config

# Update deliberately: a name here that disappears orphans messages already queued.
SNAPSHOT = {
    "ripmap.reason_episode": "episodes",
    "ripmap.merge_insights": "merge",
    "ripmap.distill": "merge",
    "ripmap.step_params": "merge",
    "ripmap.report_evaluation": "merge",
    "ripmap.flush_buffers": "merge",
    "ripmap.sweep_open": "merge",
    "ripmap.merge_pending": "merge",
    "ripmap.evaluate_version": "evaluate",
    "ripmap.dispatch_evaluations": "merge",
}


def test_registered_task_names_snapshot(redis_url: str) -> None:
    code = ("from worker.app import app; import worker.tasks; "
            "print(sorted(n for n in app.tasks if not n.startswith('celery.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=worker_env(redis_url), cwd=ROOT, check=True)
    assert done.stdout.split() and eval(done.stdout) == sorted(SNAPSHOT)
    assert tasks.TASK_QUEUES == SNAPSHOT


def test_core_task_names_are_stable() -> None:
    assert tasks.REASON_EPISODE == "ripmap.reason_episode"
    assert tasks.MERGE_INSIGHTS == "ripmap.merge_insights"
    assert tasks.DISTILL == "ripmap.distill"


def test_celery_config_is_safe_by_default() -> None:
    conf = celery_config(Settings(redis_url="redis://127.0.0.1:1/0"))
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    vt = conf["visibility_timeout"]
    assert conf["broker_transport_options"]["visibility_timeout"] == vt
    assert conf["result_backend_transport_options"]["visibility_timeout"] == vt
    assert vt > conf["task_time_limit"] > conf["task_soft_time_limit"]


def test_producer_imports_no_worker_code_or_llm_sdk() -> None:
    code = ("import sys, producer.api; "
            "print([m for m in ('worker.app', 'worker.tasks', 'anthropic', 'worker.reasoners') "
            "if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"
