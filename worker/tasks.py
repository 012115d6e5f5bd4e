"""Celery tasks: thin wrappers that validate a JSON payload and call one plain function.

Task names are the wire contract (``schemas.tasks``); renaming one orphans queued messages.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import time
from typing import Any

import redis
from celery import Task
from pydantic import ValidationError

from producer import push
from producer.api import Producer
from ranker import RepositoryError
from schemas import tasks as names
from schemas.episode import ReasoningEpisode
from schemas.errors import describe
from schemas.failures import content_id
from schemas.repos import EvaluateRequest
from schemas.versions import Evaluation
from state import budget, deadletters, evaluations, inbox, ledger, store, versions
from worker import distill, drain, episodes, evaluation, reducer, runtime
from worker.app import app
from worker.reasoners.base import PermanentReasonerError, TransientReasonerError

log = logging.getLogger(__name__)


class DeadLetterOnFailure(Task):  # type: ignore[misc]
    """A task that dead-letters what it could not handle instead of dropping it.

    With late acks, a task that raises (a wrong signature from a foreign client, a bug, a
    reasoner answer no parser survives, retries spent on an unreachable store) is acked and
    its message is gone: the dead letter keeps the payload, the reason and the time.
    """

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        payload = args[0] if len(args or ()) == 1 and not kwargs else {
            "args": list(args or ()), "kwargs": dict(kwargs or {})}
        letter_id = _batch_id(payload) if self.name == names.REASON_EPISODE else None
        # if the store is down too, the ack most likely failed as well and the message
        # comes back after the visibility timeout; Celery has logged the failure
        with contextlib.suppress(redis.RedisError):
            _dead(self.name, payload, f"failed: {type(exc).__name__}: {exc}", letter_id)


# Only errors that may succeed next time are retried by Celery: the state store being
# briefly unreachable. Reasoner errors are retried inside the reasoner, then dead-lettered.
RETRY = {
    "base": DeadLetterOnFailure,
    "autoretry_for": (redis.ConnectionError, redis.TimeoutError),
    "max_retries": 10,
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
}


@app.task(name=names.REASON_EPISODE, bind=True, **RETRY)
def reason_episode(self: Task, batch: Any) -> dict[str, Any]:
    """Reason about one batch of failures, then hand the episode to the reducer."""
    client, settings = runtime.state(), runtime.settings()
    try:
        parsed = episodes.parse_batch(batch, settings)
    except ValidationError as exc:
        return _dead(names.REASON_EPISODE, batch, "invalid batch: " + "; ".join(describe(exc)))
    try:
        episode = episodes.process(client, parsed, settings, runtime.reasoner())
    except budget.Paused as exc:
        return _paused(batch, parsed.batch_id, exc)
    except (PermanentReasonerError, TransientReasonerError) as exc:
        return _give_up(batch, parsed.batch_id, f"reasoner gave up: {exc}")
    if episode is None:
        return {"status": "already-merged", "batch_id": parsed.batch_id}
    if inbox.put(client, episode):
        _send_drain(client)
    return {"status": "reasoned", "episode_id": episode.episode_id}


@app.task(name=names.MERGE_PENDING, **RETRY)
def merge_pending() -> dict[str, Any]:
    """Merge the episodes waiting in the reducer's inbox (each once, however often sent)."""
    client = runtime.state()
    report = drain.drain(client, runtime.settings())
    if report.more:  # hand over, keeping the flag: a task's time stays short
        _send_drain(client)
    _dispatch_evaluations(client)  # the merges may have made a version
    return report.as_dict()


def _send_drain(client: redis.Redis) -> None:
    try:
        merge_pending.apply_async(argsrepr="<drain>", kwargsrepr="{}")
    except Exception:  # the episode waits in the inbox; the beat's sweep sends a drain
        with contextlib.suppress(redis.RedisError):
            inbox.release(client)
        log.warning("could not send a drain task; the sweep will", exc_info=True)


@app.task(name=names.MERGE_INSIGHTS, **RETRY)
def merge_insights(episode: Any) -> dict[str, Any]:
    """Merge one episode sent as a message (by a foreign client; the service's own episodes
    go through the inbox) into the shared scratchpad; a redelivery changes nothing."""
    try:
        parsed = ReasoningEpisode.model_validate(episode)
    except ValidationError as exc:
        return _dead(names.MERGE_INSIGHTS, episode, "invalid episode: " + "; ".join(describe(exc)))
    # the merge also clears a dead letter a redelivered copy of this batch may have left
    merged = reducer.merge(runtime.state(), parsed, runtime.settings())
    _dispatch_evaluations(runtime.state())
    return {"status": "merged" if merged else "duplicate", "episode_id": parsed.episode_id}


@app.task(name=names.DISTILL, **RETRY)
def distill_scratchpad(force: bool = False, request_id: str | None = None) -> dict[str, Any]:
    """Distill the scratchpad into a new wisdom version, if anything is new."""
    client, settings, reasoner = runtime.state(), runtime.settings(), runtime.reasoner()
    try:
        if force or request_id:
            outcome = distill.distill(client, settings, reasoner, force=bool(force))
        else:  # a beat tick: once per interval, however many beats send it
            outcome = distill.on_tick(client, settings, reasoner)
        result: dict[str, Any] = {"status": outcome.status, "version": outcome.version}
        if outcome.tick is not None:
            result["tick"] = outcome.tick
    except budget.Paused as exc:  # the next beat tick (or request) tries again
        result = {"status": "paused", "reason": exc.reason}
    except (PermanentReasonerError, TransientReasonerError) as exc:
        # answered, so whoever asked is not left waiting; the next tick tries again
        result = {"status": "failed", "reason": _redact(f"reasoner gave up: {exc}")}
    if request_id:
        store.record_distill_result(client, str(request_id)[:64], result)
    return result


@app.task(name=names.STEP_PARAMS, **RETRY)
def step_params(force: bool = False) -> dict[str, Any]:
    """Take the consensus step on votes that waited too long (or now, when forced)."""
    record = versions.tick(runtime.state(), runtime.settings(), force=bool(force))
    _dispatch_evaluations(runtime.state())
    return {"status": "stepped" if record else "nothing-due",
            "version": record.version if record else None}


@app.task(name=names.REPORT_EVALUATION, **RETRY)
def report_evaluation(evaluation: Any) -> dict[str, Any]:
    """Record a ranking service's NDCG for a version; move best or roll back."""
    try:
        parsed = Evaluation.model_validate(evaluation)
    except ValidationError as exc:
        return _dead(names.REPORT_EVALUATION, evaluation,
                     "invalid evaluation: " + "; ".join(describe(exc)))
    eid = parsed.evaluation_id or content_id(parsed.model_dump(mode="json"))
    status = versions.record_evaluation(runtime.state(), parsed, eid, runtime.settings())
    _dispatch_evaluations(runtime.state())  # a rollback is a new version
    return {"status": status, "version": parsed.version}


@app.task(name=names.EVALUATE_VERSION, **RETRY)
def evaluate_version(request: Any) -> dict[str, Any]:
    """Score a version on a registered repository, record it once, push its failures."""
    try:
        parsed = EvaluateRequest.model_validate(request)
    except ValidationError as exc:
        return _dead(names.EVALUATE_VERSION, request,
                     "invalid evaluation request: " + "; ".join(describe(exc)))
    try:
        result = evaluation.evaluate(runtime.state(), runtime.settings(), parsed, _producer())
    except RepositoryError as exc:  # the repository moved or lost its history: no retry helps
        evaluations.drop_due(runtime.state(), parsed.version, parsed.repo)
        return _dead(names.EVALUATE_VERSION, request, f"repository unusable: {exc}")
    except (redis.ConnectionError, redis.TimeoutError):
        raise  # retried (RETRY): it may succeed next time
    except Exception:
        # dead-lettered by the task base with the reason; off the due set, so it is not
        # re-run every redispatch period (the beat re-marks the current version)
        with contextlib.suppress(redis.RedisError):
            evaluations.drop_due(runtime.state(), parsed.version, parsed.repo)
        raise
    _dispatch_evaluations(runtime.state())  # a rollback it caused is a new version
    if result is None:
        return {"status": "duplicate", "version": parsed.version, "repo": parsed.repo}
    return {"status": result.verdict, "version": parsed.version, "repo": parsed.repo,
            "tuning_ndcg": result.tuning.ndcg, "heldout_ndcg": result.heldout.ndcg}


@app.task(name=names.DISPATCH_EVALUATIONS, **RETRY)
def dispatch_evaluations() -> dict[str, Any]:
    """Beat: mark the current version due where it has no result, send what is due."""
    client = runtime.state()
    marked = evaluation.sweep(client)
    return {"marked": marked, "sent": _dispatch_evaluations(client)}


@functools.cache
def _producer() -> Producer:
    """This process's producer, to send evaluation tasks and failures by name."""
    return Producer(runtime.settings())


def _dispatch_evaluations(client: redis.Redis) -> int:
    try:
        return evaluation.dispatch_due(client, runtime.settings(), _producer())
    except Exception:  # claimed entries come due again; the beat's dispatch sends them
        log.warning("could not send evaluations; the beat will", exc_info=True)
        return 0


def _paused(batch: Any, batch_id: str, exc: budget.Paused) -> dict[str, Any]:
    """The daily budget is spent or the fleet's rate limit stays full: wait here a while,
    then put a fresh copy at the back of the queue. Waiting in the task (not as a Celery
    countdown) keeps the backlog in Redis: a worker holds one paused batch per slot, not
    every queued batch as an in-memory ETA task, and no retry count runs out. The wait
    stays far below the visibility timeout, or the broker would deliver the batch again."""
    time.sleep(min(exc.retry_after, runtime.settings().visibility_timeout / 4))
    # the same task id: the ledger's sweep finds the copy in the queue by its batch id
    reason_episode.apply_async(args=[batch], task_id=batch_id,
                               argsrepr=f"<{names.REASON_EPISODE} {batch_id}>", kwargsrepr="{}")
    return {"status": "paused", "reason": exc.reason}


def _dead(task: str, payload: Any, reason: str, letter_id: str | None = None) -> dict[str, Any]:
    reason = _redact(reason)
    letter = deadletters.add(runtime.state(), task, payload, reason, letter_id=letter_id)
    return {"status": "dead-lettered", "id": letter, "reason": reason}


def _give_up(batch: Any, batch_id: str, reason: str) -> dict[str, Any]:
    """Dead-letter a batch the reasoner failed on, unless it was merged meanwhile.

    A redelivered copy can fail after the first copy's episode was reasoned and its merge
    queued (the worker died before acking). merge_insights removes the letter after
    merging; checking for the merge after writing the letter closes the other order.
    """
    result = _dead(names.REASON_EPISODE, batch, reason, batch_id)
    client = runtime.state()
    if store.merged_flags(client, [batch_id])[0]:
        deadletters.remove(client, batch_id)
        return {"status": "already-merged", "batch_id": batch_id}
    return result


def _batch_id(payload: Any) -> str | None:
    """The batch id of a valid batch payload (its dead letter's id), else None."""
    try:
        return episodes.parse_batch(payload, runtime.settings()).batch_id
    except (ValidationError, TypeError):
        return None


_URL_PASSWORD = re.compile(r"(rediss?://[^:@/\s]*:)[^@\s]+@")


def _redact(text: str) -> str:
    """``text`` without the secrets this process knows (an LLM CLI's stderr or an error
    may quote them): the API key, the API token, and passwords in Redis URLs."""
    s = runtime.settings()
    secrets = [x.get_secret_value() for x in (s.anthropic_api_key, s.api_token) if x]
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return _URL_PASSWORD.sub(r"\1***@", text)


@app.task(name=names.FLUSH_BUFFERS, **RETRY)
def flush_buffers() -> dict[str, Any]:
    """Enqueue partial push batches that waited long enough; re-send those whose pusher died."""
    return push.flush_due().as_dict()


@app.task(name=names.SWEEP_OPEN, **RETRY)
def sweep_open() -> dict[str, Any]:
    """Send again the open batches the broker lost (in no queue on two sweeps), and a drain
    for episodes left in the inbox without one."""
    client, settings = runtime.state(), runtime.settings()
    if inbox.kick(client):  # episodes wait with no drain pending (one could not be sent)
        _send_drain(client)
    report, lost = ledger.find_lost(client, runtime.broker(), settings)
    for bad in report.invalid:
        deadletters.add(client, names.REASON_EPISODE, bad.payload, bad.reason,
                        letter_id=bad.batch_id)
    if lost:
        producer = Producer(settings)
        try:
            report.resent = [e.batch_id for e in producer.enqueue_batches(lost, force=True)]
        finally:
            producer.close()
        ledger.count_resent(client, len(report.resent))
    return report.as_dict()
