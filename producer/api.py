"""The Python API ranking services use to submit failures."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from pydantic import ValidationError

from schemas import tasks
from schemas.errors import describe
from schemas.failures import FailureBatch, RankingFailure
from schemas.settings import Settings, get_settings
from schemas.versions import Evaluation
from state import ledger, scripts, store

CLAIM_SECONDS = 60  # how long a batch claim lives before its send is confirmed


class InvalidInput(ValueError):
    """Input rejected before anything was enqueued; ``problems`` name record and field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Enqueued:
    """One batch: its id, and whether this call enqueued it (False: enqueued before)."""

    batch_id: str
    new: bool


def validate_failures(records: Sequence[Any]) -> list[RankingFailure]:
    """Validate every record; raise InvalidInput naming each bad record and field."""
    if not records:
        raise InvalidInput(["no failures given: at least one is required"])
    out, problems = [], []
    for i, record in enumerate(records):
        try:
            out.append(RankingFailure.model_validate(record))
        except ValidationError as exc:
            problems += [f"record {i}: {line}" for line in describe(exc)]
    if problems:
        raise InvalidInput(problems)
    return out


def chunk(failures: list[RankingFailure], size: int) -> list[FailureBatch]:
    """Consecutive batches of at most ``size`` failures."""
    return [FailureBatch(failures=failures[i : i + size]) for i in range(0, len(failures), size)]


class Producer:
    """Validates failures, batches them, and enqueues one episode per new batch."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.celery = Celery("ripmap_producer", broker=self.settings.broker)
        broker, redis_options = self.settings.broker, store.RedisOptions.from_settings(
            self.settings)
        self.celery.conf.update(task_serializer="json", accept_content=["json"],
                                broker_connection_retry_on_startup=True,
                                broker_transport_options={
                                    **ledger.publish_options(broker),
                                    **store.broker_sentinel_options(broker, redis_options)},
                                broker_use_ssl=store.broker_use_ssl(broker, redis_options))
        # On AMQP a message for a queue no worker declared yet is confirmed and dropped:
        # declare each task's queue (once per connection; kombu caches it). Redis needs none.
        self._declare: list[Any] | None = (
            None if ledger.broker_kind(self.settings.broker) == "amqp" else [])
        self.state = store.connect(self.settings.state_url, options=redis_options)

    def enqueue(self, records: Iterable[Any]) -> list[Enqueued]:
        """Validate all records, then enqueue their batches; nothing is sent if any is bad."""
        batches = chunk(validate_failures(list(records)), self.settings.batch_size)
        return self.enqueue_batches(batches)

    def enqueue_batch(self, batch: FailureBatch) -> Enqueued:
        """Enqueue one batch once: the same content submitted again is not sent again."""
        return self.enqueue_batches([batch])[0]

    def enqueue_batches(
        self,
        batches: Sequence[FailureBatch],
        *,
        force: bool = False,
        confirm: Callable[[redis.client.Pipeline], None] | None = None,
    ) -> list[Enqueued]:
        """Claim every batch id and record it as open in one round trip, then publish the
        new ones in one broker pipeline; a batch claimed before is not sent again, unless
        ``force`` (a re-send of a batch that may have been lost). Once sent, the claims are
        extended in one round trip, with whatever ``confirm`` queues on its pipeline."""
        payloads = [(b.batch_id, b.model_dump_json()) for b in batches]
        # A claim starts short-lived and is extended once its batch is sent: if the send fails
        # and the release fails too (Redis down), the claim still lapses soon, and a retry is
        # not dropped as "submitted before" for the whole dedupe period.
        claimed = scripts.claim_batches(self.state, payloads, CLAIM_SECONDS, force=force)
        new = [(b, raw) for b, (_, raw), fresh in zip(batches, payloads, claimed, strict=True)
               if fresh or force]
        try:
            # one pipeline for the group; if it fails, some may have gone out all the same:
            # sent again on retry, they are merged once
            with self.celery.producer_or_acquire() as publisher, publisher.batch():
                for batch, raw in new:
                    self.send(tasks.REASON_EPISODE, [json.loads(raw)], batch.batch_id,
                              publisher=publisher)
        except Exception:
            if not force:  # a forced re-send stays open: the sweep tries it again
                ledger.forget(self.state, [b.batch_id for b, _ in new])
            raise
        pipe = self.state.pipeline(transaction=True)  # what confirm queues stays atomic
        store.extend_batches(self.state, [b.batch_id for b, _ in new],
                             self.settings.dedupe_ttl_seconds, pipe)
        if confirm is not None:
            confirm(pipe)
        pipe.execute()
        return [Enqueued(b.batch_id, fresh) for b, fresh in zip(batches, claimed, strict=True)]

    def step(self) -> None:
        """Ask for the consensus step on pending votes now, without waiting for a quorum."""
        self.send(tasks.STEP_PARAMS, [], None, kwargs={"force": True})

    def report_evaluation(self, evaluation: Evaluation) -> str:
        """Send an evaluation of a version; returns its id (a redelivery counts once)."""
        eid = evaluation.evaluation_id or uuid.uuid4().hex
        payload = evaluation.model_copy(update={"evaluation_id": eid})
        self.send(tasks.REPORT_EVALUATION, [payload.model_dump(mode="json")], eid)
        return eid

    def distill(self) -> str:
        """Ask for a distillation now; returns the request id its outcome is kept under."""
        request_id = uuid.uuid4().hex
        self.send(tasks.DISTILL, [], request_id, kwargs={"force": True, "request_id": request_id})
        return request_id

    def send(
        self,
        name: str,
        args: list[Any],
        task_id: str | None,
        kwargs: dict[str, Any] | None = None,
        publisher: Any = None,
    ) -> None:
        """Publish a task by name on its queue (over ``publisher`` when given)."""
        # A short argsrepr: Celery would otherwise pretty-print the whole payload per message.
        # On Redis, no declare: the message goes to the default exchange, straight onto the
        # queue's list, whose binding the workers declare; declaring per message was a fifth
        # of the cost of a send. On AMQP the queue is declared (kombu caches it).
        self.celery.send_task(name, args=args, kwargs=kwargs or {}, task_id=task_id,
                              queue=tasks.TASK_QUEUES[name], producer=publisher,
                              argsrepr=f"<{name} {task_id or ''}>", kwargsrepr="{}",
                              declare=self._declare)

    def close(self) -> None:
        """Release broker and state connections."""
        self.celery.close()
        self.state.close()
