"""The wire contract: the checked-in JSON Schema matches the models, and the worker takes a
minimal hand-built protocol-2 message published with kombu (no Celery on the sending side)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import jsonschema
import pytest
import redis
from kombu import Connection

from schemas import tasks, wire
from schemas.failures import FailureBatch
from state import deadletters, store
from tests.factories import failure
from tests.services import ROOT, Worker, broker_url, wait_until


def test_the_schema_file_matches_the_models() -> None:
    assert wire.SCHEMA_FILE.read_text() == wire.render(), "run `python -m schemas.wire`"
    done = subprocess.run([sys.executable, "-m", "schemas.wire", "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_every_task_is_documented_with_its_queue() -> None:
    doc = json.loads(wire.SCHEMA_FILE.read_text())
    assert set(wire.TASKS) == set(tasks.TASK_QUEUES)
    assert {name: t["queue"] for name, t in doc["x-tasks"].items()} == tasks.TASK_QUEUES
    jsonschema.Draft202012Validator.check_schema(doc)


def _validator(task: str) -> jsonschema.Draft202012Validator:
    doc = json.loads(wire.SCHEMA_FILE.read_text())
    body = {**doc, "$ref": f"#/$defs/task:{task}"}
    return jsonschema.Draft202012Validator(body)


def _errors(task: str, body: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in _validator(task).iter_errors(body)]


def test_the_schema_accepts_what_the_worker_accepts() -> None:
    batch = {"failures": [failure(1, ndcg=0), failure(2)]}
    assert _errors(tasks.REASON_EPISODE, [[batch], {}, {}]) == []
    assert _errors(tasks.REASON_EPISODE, [[batch], {}]) == []
    assert _errors(tasks.DISTILL, [[], {"force": True, "request_id": "r1"}, {}]) == []
    assert _errors(tasks.FLUSH_BUFFERS, [[], {}, {}]) == []
    assert _errors(tasks.STEP_PARAMS, [[], {"force": True}, {}]) == []
    assert _errors(tasks.REPORT_EVALUATION,
                   [[{"version": 3, "mean_ndcg": 0, "cases": 20}], {}, {}]) == []
    FailureBatch.model_validate(batch)  # and the model agrees


@pytest.mark.parametrize(("body", "where"), [
    ([[{"failures": [failure(1, ndcg=1.7)]}], {}, {}], "ndcg"),
    ([[{"failures": [failure(1, expected_top=[])]}], {}, {}], "expected_top"),
    ([[{"failures": [failure(1, surprise=1)]}], {}, {}], "surprise"),
    ([[{"failures": []}], {}, {}], "failures"),
    ([[], {}, {}], "[0]"),
    ([[{"failures": [failure(1)]}], {"force": True}, {}], "force"),
])
def test_the_schema_rejects_what_the_worker_rejects(body: Any, where: str) -> None:
    errors = _errors(tasks.REASON_EPISODE, body)
    assert errors and any(where in e for e in errors), errors


def test_the_worker_merges_a_minimal_protocol2_message_published_with_kombu(
    worker: Worker, client: redis.Redis, redis_url: str
) -> None:
    # what a Rust or Go producer sends: ndcg as the integer 0, and only the three
    # headers protocol 2 cannot do without
    payload = {"failures": [failure(1, ndcg=0), failure(2, ndcg=0)]}
    body = json.dumps([[payload], {}, {}])
    with Connection(broker_url(redis_url)) as conn:
        conn.Producer().publish(
            body, exchange="", routing_key=tasks.EPISODE_QUEUE,
            content_type="application/json", content_encoding="utf-8",
            headers={"lang": "rust", "task": tasks.REASON_EPISODE, "id": uuid.uuid4().hex},
        )
    assert_merged_from_the_wire(client, payload)


def assert_merged_from_the_wire(client: redis.Redis, payload: dict[str, Any]) -> None:
    """The hand-built message's two-failure batch (ndcg 0) ended as one merged episode."""
    batch_id = FailureBatch.model_validate(payload).batch_id
    wait_until(lambda: store.merged_flags(client, [batch_id])[0]
               or deadletters.count(client), 60, "the episode to be merged")
    assert deadletters.count(client) == 0, deadletters.list_all(client)[0].reason
    episode = store.recent_episodes(client, 1)[0]
    assert episode["batch_id"] == batch_id and episode["failure_count"] == 2
    assert episode["mean_ndcg"] == 0.0
