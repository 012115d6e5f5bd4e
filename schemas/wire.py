"""The wire contract for Celery clients in any language: each task's name, queue and the
JSON Schema of its arguments, generated from the pydantic models.

``python -m schemas.wire`` rewrites ``schemas/task_payloads.schema.json``;
``python -m schemas.wire --check`` exits 1 when the file no longer matches the models.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from schemas import tasks
from schemas.episode import ReasoningEpisode
from schemas.failures import FailureBatch
from schemas.repos import EvaluateRequest
from schemas.versions import Evaluation

SCHEMA_FILE = Path(__file__).with_name("task_payloads.schema.json")


class NoKwargs(BaseModel):
    """The task takes no keyword arguments: send ``{}``."""

    model_config = ConfigDict(extra="forbid", title="NoKwargs")


class DistillKwargs(BaseModel):
    """Keyword arguments of ``ripmap.distill``."""

    model_config = ConfigDict(extra="forbid", title="DistillKwargs")

    force: bool = Field(False, description="distill even when nothing new was merged")
    request_id: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="the outcome is kept for an hour under this id, for the requester"
    )


class StepKwargs(BaseModel):
    """Keyword arguments of ``ripmap.step_params``."""

    model_config = ConfigDict(extra="forbid", title="StepKwargs")

    force: bool = Field(False, description="step on the pending votes now, without a quorum")


@dataclass(frozen=True)
class TaskSpec:
    """Positional argument models, keyword-argument model, and what the task does."""

    args: tuple[type[BaseModel], ...]
    kwargs: type[BaseModel]
    description: str


TASKS: dict[str, TaskSpec] = {
    tasks.REASON_EPISODE: TaskSpec(
        (FailureBatch,), NoKwargs,
        "Reason about one batch of ranking failures and merge the episode into the "
        "scratchpad. The batch holds at most the service's configured batch size (5 by "
        "default; 20 is the hard ceiling the schema states); a larger or invalid batch is "
        "dead-lettered with the reason. The same failures sent twice are merged once.",
    ),
    tasks.MERGE_INSIGHTS: TaskSpec(
        (ReasoningEpisode,), NoKwargs,
        "Internal: merge one reasoned episode into the scratchpad (idempotent by "
        "episode_id). Producers do not send it.",
    ),
    tasks.REPORT_EVALUATION: TaskSpec(
        (Evaluation,), NoKwargs,
        "Record a ranking service's NDCG for a parameter version: moves best, or rolls back "
        "a clear regression. The same evaluation_id counts once.",
    ),
    tasks.STEP_PARAMS: TaskSpec(
        (), StepKwargs,
        "Take the consensus step on pending votes that waited long enough (now, with force).",
    ),
    tasks.DISTILL: TaskSpec(
        (), DistillKwargs,
        "Distill the scratchpad into a new wisdom version (skipped when nothing is new, "
        "unless force).",
    ),
    tasks.FLUSH_BUFFERS: TaskSpec(
        (), NoKwargs,
        "Internal (beat): enqueue partial push batches that waited long enough, and re-send "
        "batches whose pusher died.",
    ),
    tasks.MERGE_PENDING: TaskSpec(
        (), NoKwargs,
        "Internal: merge the episodes waiting in the reducer's inbox (sent by the episode "
        "that finds no drain pending).",
    ),
    tasks.SWEEP_OPEN: TaskSpec(
        (), NoKwargs,
        "Internal (beat): send again the batches the broker lost (sent, not merged, and in "
        "no queue on two sweeps).",
    ),
    tasks.EVALUATE_VERSION: TaskSpec(
        (EvaluateRequest,), NoKwargs,
        "Internal (the closed loop): score a parameter version on a registered repository "
        "with the reference ranker, record its tuning NDCG (held-out beside it, for "
        "reporting only) and push a sample of its failures as episodes. Once per (version, "
        "repository).",
    ),
    tasks.DISPATCH_EVALUATIONS: TaskSpec(
        (), NoKwargs,
        "Internal (beat): send the evaluations due (each new version, on every registered "
        "repository), and again those whose task was lost.",
    ),
}

CELERY_MESSAGE = {
    "protocol": 2,
    "publish": "to the default exchange '' with routing key = the task's queue (with Redis "
               "as broker: the list named like the queue), or to the exchange named like the "
               "queue with the same routing key",
    "properties": {"content_type": "application/json", "content_encoding": "utf-8"},
    "headers": {
        "required": {"lang": "any string, e.g. 'rust'", "task": "the task name",
                     "id": "a unique task id (the batch id is recomputed from content)"},
        "optional": "any other protocol-2 header (retries, eta, expires, root_id, ...)",
    },
    "body": "[args, kwargs, embed]: args and kwargs as this file's task schemas state; "
            "embed may be {} or {callbacks, errbacks, chain, chord} all null",
    "numbers": "JSON numbers: an integer (e.g. ndcg 0) is accepted wherever a float is",
}


def contract() -> dict[str, Any]:
    """The contract document: JSON Schema 2020-12, one ``$defs`` entry per task body."""
    models = sorted({m for spec in TASKS.values() for m in (*spec.args, spec.kwargs)},
                    key=lambda m: m.__name__)
    refs, defs = models_json_schema([(m, "validation") for m in models],
                                    ref_template="#/$defs/{model}")
    bodies: dict[str, Any] = {}
    index: dict[str, Any] = {}
    for name, spec in TASKS.items():
        args = [refs[(m, "validation")] for m in spec.args]
        bodies[f"task:{name}"] = {
            "description": f"The body of a {name} message: [args, kwargs, embed].",
            "type": "array",
            "prefixItems": [
                {"type": "array", **({"prefixItems": args} if args else {}),
                 "minItems": len(args), "maxItems": len(args)},
                refs[(spec.kwargs, "validation")],
                {"type": "object"},
            ],
            "minItems": 2,
            "maxItems": 3,
        }
        index[name] = {"queue": tasks.TASK_QUEUES[name], "description": spec.description,
                       "body": {"$ref": f"#/$defs/task:{name}"}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/ripmap/ripmap-optimizer/schemas/task_payloads.schema.json",
        "title": "ripmap-optimizer Celery task payloads",
        "description": "How to enqueue ripmap-optimizer tasks from any language with a Celery "
                       "client (or raw AMQP/Redis): see x-celery-message and x-tasks. "
                       "Generated by `python -m schemas.wire` from the pydantic models.",
        "x-celery-message": CELERY_MESSAGE,
        "x-tasks": index,
        "$defs": {**bodies, **defs.get("$defs", {})},
    }


def render() -> str:
    """The contract as the checked-in file's text."""
    return json.dumps(contract(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the schema file, or with ``--check`` report whether it is current."""
    parser = argparse.ArgumentParser(prog="python -m schemas.wire", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = SCHEMA_FILE.read_text() if SCHEMA_FILE.exists() else ""
        if current != text:
            print(f"{SCHEMA_FILE} is stale: run `python -m schemas.wire`", file=sys.stderr)
            return 1
        return 0
    SCHEMA_FILE.write_text(text)
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
