"""Streaming push: failures one at a time into per-repository Redis buffers, enqueued as a
batch as soon as a repository's buffer holds ``batch_size`` of them, and as a partial
batch once its oldest failure waited ``push_max_wait_seconds`` (the flusher, a beat task).

Guarantee: at least once into the queue, exactly once into the scratchpad.

- Appending and taking full batches is one Lua script (``scripts.PUSH_TAKE``): pushers in
  any number of threads and processes never lose a failure, never put one in two
  batches, never take more than ``batch_size``.
- A taken batch is moved, in that same script, into a pending hash; it leaves it only
  once its enqueue is confirmed. A pusher that dies (or whose enqueue fails) between the
  take and the confirmation leaves the batch pending, and the flusher re-sends it after
  ``push_resend_after_seconds``. A pusher that died after sending but before confirming
  gets its batch sent twice: the worker merges an episode id (the batch id) once, so the
  duplicate costs one reasoning call and changes nothing.
- The batches one call takes (a push, a flush) are enqueued as one group (one claim, one
  broker pipeline) and confirmed together; if the group's enqueue fails, all of its
  batches stay pending, and their receipts say so.
- What Redis holds survives a Redis restart only with persistence on (AOF).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from producer.api import InvalidInput, Producer, validate_failures
from schemas import tasks
from schemas.errors import describe
from schemas.failures import FailureBatch, RankingFailure
from schemas.ingest import PushReceipt, PushState
from schemas.settings import Settings
from state import deadletters, scripts, store

log = logging.getLogger(__name__)

STALE_CLAIM_LIMIT = 1_000  # pending batches one flush re-sends at most


@dataclass
class FlushReport:
    """What one flush enqueued: partial batches, and re-sent batches whose pusher died."""

    batches: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    failed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The report as the flush task's JSON result."""
        return {"batches": self.batches, "resent": self.resent, "failed": self.failed}


class Pusher:
    """Pushes validated failures into the buffers and enqueues the batches they fill."""

    def __init__(self, settings: Settings | None = None, producer: Producer | None = None) -> None:
        self.producer = producer or Producer(settings)
        self.settings = self.producer.settings
        self.client = self.producer.state

    def push(self, failure: Any) -> PushReceipt:
        """Validate one failure and push it; InvalidInput names each bad field."""
        try:
            valid = RankingFailure.model_validate(failure)
        except ValidationError as exc:
            raise InvalidInput(describe(exc)) from None
        return self.push_valid([valid])[0]

    def push_many(self, failures: Sequence[Any]) -> list[PushReceipt]:
        """Validate every failure, then push them all at once; nothing is pushed if any is bad."""
        return self.push_valid(validate_failures(list(failures)))

    def push_valid(self, failures: list[RankingFailure]) -> list[PushReceipt]:
        """Push validated failures atomically (one transaction); one receipt each, in order.

        Every batch they fill is enqueued in one group (one claim, one broker pipeline)."""
        groups: dict[str, list[int]] = {}
        for i, failure in enumerate(failures):
            groups.setdefault(failure.repo_context.name, []).append(i)
        items = {repo: [failures[i].model_dump_json() for i in idx] for repo, idx in groups.items()}
        takes = self._take(items)
        sent = iter(self._send([pair for _, taken in takes for pair in taken]))
        receipts: dict[int, PushReceipt] = {}
        for (repo, idx), (before, taken) in zip(groups.items(), takes, strict=True):
            mine = [next(sent) for _ in taken]
            for i, receipt in zip(idx, self._receipts(repo, before, len(idx), mine), strict=True):
                receipts[i] = receipt
        return [receipts[i] for i in range(len(failures))]

    def _take(self, items: dict[str, list[str]], flush_cutoff: float | None = None,
              now: float | None = None) -> list[scripts.Taken]:
        """Append each repository's items and take its full batches (and, with
        ``flush_cutoff``, the partial rest of a due one), all in one transaction."""
        size, now = self.settings.batch_size, time.time() if now is None else now
        if len(items) == 1:  # one script call is atomic by itself
            repo, values = next(iter(items.items()))
            return [scripts.push_take(self.client, repo, values, batch_size=size, now=now,
                                      flush_cutoff=flush_cutoff)]
        pipe = self.client.pipeline(transaction=True)
        for repo, values in items.items():
            scripts.queue_push_take(pipe, repo, values, batch_size=size, now=now,
                                    flush_cutoff=flush_cutoff)
        return [scripts.parse_taken(raw) for raw in pipe.execute()]

    def _receipts(
        self, repo: str, before: int, count: int, sent: list[tuple[str | None, PushState]]
    ) -> list[PushReceipt]:
        """Where each of the ``count`` items appended after ``before`` went, given how the
        batches taken from the buffer were sent."""
        size = self.settings.batch_size
        out = []
        for at in range(before, before + count):  # the item's index in the buffer as appended
            if at // size < len(sent):
                batch_id, state = sent[at // size]
                out.append(PushReceipt(repo=repo, state=state, batch_id=batch_id))
            else:
                position = at - len(sent) * size + 1
                out.append(PushReceipt(repo=repo, state="buffered", position=position))
        return out

    def flush(self, now: float | None = None, *, everything: bool = False) -> FlushReport:
        """Enqueue partial batches that waited long enough (all of them with ``everything``)
        and re-send batches taken but never confirmed sent."""
        now = time.time() if now is None else now
        cutoff = now if everything else now - self.settings.push_max_wait_seconds / 2
        report = FlushReport()
        due = store.due_push_repos(self.client, cutoff)
        if due:
            takes = self._take({repo: [] for repo in due}, flush_cutoff=cutoff, now=now)
            self._tally(report.batches, report,
                        self._send([pair for _, taken in takes for pair in taken]))
        stale_cutoff = now - self.settings.push_resend_after_seconds
        stale = scripts.claim_stale_batches(self.client, stale_cutoff, now, STALE_CLAIM_LIMIT)
        self._tally(report.resent, report, self._send(stale, resend=True))
        return report

    def close(self) -> None:
        """Release broker and state connections."""
        self.producer.close()

    def _send(
        self, taken: list[tuple[str, str]], *, resend: bool = False
    ) -> list[tuple[str | None, PushState]]:
        """Enqueue taken batches as one group and confirm them all; ``(batch id, state)``
        each, in order. If the group's enqueue fails, every batch in it stays pending."""
        if not taken:
            return []
        done: list[str] = []
        group: list[tuple[str, FailureBatch]] = []
        for token, raw in taken:
            try:
                batch = FailureBatch.model_validate_json(raw)
            except ValidationError as exc:  # only if the contract changed under a buffer
                reason = "pushed batch no longer valid: " + "; ".join(describe(exc))
                deadletters.add(self.client, tasks.REASON_EPISODE, raw, reason)
                done.append(token)
                continue
            group.append((token, batch))
        state: PushState = "enqueued"
        if group:
            try:
                # a stale batch's pusher may have claimed its id and died before sending: the
                # dedupe marker cannot tell, so a re-send goes regardless (merged once)
                # acked in the round trip that confirms the send
                sent = [token for token, _ in group]
                self.producer.enqueue_batches(
                    [b for _, b in group], force=resend,
                    confirm=lambda pipe: store.ack_pushed(self.client, sent, pipe))
            except Exception:
                log.warning("enqueue of %d batches failed; the flusher re-sends them",
                            len(group), exc_info=True)
                state = "pending"
        ids = {token: batch.batch_id for token, batch in group}
        store.ack_pushed(self.client, done)  # the dead-lettered, if any
        return [(ids[t], state) if t in ids else (None, "pending") for t, _ in taken]

    @staticmethod
    def _tally(
        into: list[str], report: FlushReport, sent: list[tuple[str | None, PushState]]
    ) -> None:
        into += [b for b, state in sent if b is not None and state == "enqueued"]
        report.failed += sum(state == "pending" for b, state in sent if b is not None)


_default: tuple[int, Pusher] | None = None
_default_lock = threading.Lock()


def default_pusher() -> Pusher:
    """This process's pusher, from the environment's settings (a forked child gets its own)."""
    global _default
    with _default_lock:
        if _default is None or _default[0] != os.getpid():
            _default = (os.getpid(), Pusher())
        return _default[1]


def push(failure: Any) -> PushReceipt:
    """Validate one failure and append it to its repository's buffer.

    Returns where it went (buffered at a position, or in a batch this call enqueued).
    Raises InvalidInput naming each bad field; nothing is pushed then.
    """
    return default_pusher().push(failure)


def flush_due(now: float | None = None) -> FlushReport:
    """Enqueue every partial batch that waited long enough, and re-send stale pending ones."""
    return default_pusher().flush(now)
