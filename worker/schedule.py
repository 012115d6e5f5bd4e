"""Beat entries, each with the reason it exists, and the scheduler that sends them.

The schedule lives in the state store (celery-redbeat, keys under ``keys.BEAT_PREFIX``),
never in a file: a beat starts from any working directory. Its lock lets any number of
beats run: one sends, the others stand by and take over within the lock timeout of the
active one dying.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import SimpleNamespace, TracebackType
from typing import Any

import redis
from kombu.utils.url import maybe_sanitize_url
from redbeat import RedBeatScheduler  # type: ignore[import-untyped]
from redbeat.schedulers import acquire_distributed_beat_lock  # type: ignore[import-untyped]
from redis.exceptions import LockError

from schemas.settings import Settings
from schemas.tasks import (
    DISPATCH_EVALUATIONS,
    DISTILL,
    FLUSH_BUFFERS,
    MERGE_QUEUE,
    STEP_PARAMS,
    SWEEP_OPEN,
)
from state.ledger import CONFIRM_SECONDS

logger = logging.getLogger("celery.beat")
EVALUATION_DISPATCH_SECONDS = 30.0


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
        # Evaluations no merge sent (a version made by the CLI, a lost task or mark), and the
        # current version re-marked where it has no result.
        "dispatch-evaluations": {
            "task": DISPATCH_EVALUATIONS,
            "schedule": EVALUATION_DISPATCH_SECONDS,
            "options": {"queue": MERGE_QUEUE, "expires": EVALUATION_DISPATCH_SECONDS},
        },
    }


def beat_loop_interval(settings: Settings) -> int:
    """Longest a beat sleeps between passes, and how often a standby beat tries the lock:
    the shortest entry's interval, within 1..5 s (5 s with the default settings)."""
    shortest = min(float(entry["schedule"]) for entry in beat_schedule(settings).values())
    return int(max(1.0, min(5.0, shortest)))


def beat_lock_timeout(settings: Settings) -> int:
    """Seconds the active beat's lock outlives its last pass: five passes (redbeat's own
    ratio), so a standby takes over at most this plus one loop interval after the active
    beat died (25 + 5 s with the default settings)."""
    return 5 * beat_loop_interval(settings)


class Scheduler(RedBeatScheduler):  # type: ignore[misc]
    """redbeat's scheduler, with failures said in one line and outages ridden out.

    Celery redirects a beat's stderr to its logger, one record per ``write``; Python's
    traceback printer writes the source excerpts and ``^^^`` markers a few characters at a
    time, so an exception escaping beat used to be logged one character per line. A beat
    that cannot reach the state store at start exits with one line saying so; any other
    exception that escapes is said in one line too (the ``beat raised exception`` record
    before it holds the traceback).

    Once running, a pass that cannot reach the state store is skipped and tried again a
    loop interval later (redbeat's lock calls are not retried: a Redis restart would
    otherwise stop the beat), and a beat that lost its lock (its passes stalled past the
    lock timeout, or a restarted Redis forgot it) goes back to standing by for it.
    """

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            sys.excepthook = _one_line_excepthook
        super().__init__(app, *args, **kwargs)

    def setup_schedule(self) -> None:
        try:
            super().setup_schedule()
        except (redis.RedisError, OSError) as exc:
            url = maybe_sanitize_url(self.app.redbeat_conf.redis_url)
            raise SystemExit(f"beat cannot start: could not keep its schedule in the state "
                             f"store at {url}: {type(exc).__name__}: {exc}") from None

    def tick(self, *args: Any, **kwargs: Any) -> Any:
        try:
            self._hold_lock()
            return super().tick(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, LockError) as exc:
            logger.warning("beat: pass skipped, trying again in %ss: %s: %s",
                           self.max_interval, type(exc).__name__, exc)
            return self.max_interval

    def close(self) -> None:
        try:
            super().close()
        except redis.RedisError as exc:  # the lock expires by itself
            logger.warning("beat: could not release the lock: %s: %s", type(exc).__name__, exc)
            self.lock = None

    def _hold_lock(self) -> None:
        """Renew the lock, or wait for it (as a standby does) if this beat lost it."""
        if not self.lock_key:
            return
        if self.lock is None:  # the state store was down when beat started: take it now
            acquire_distributed_beat_lock(sender=SimpleNamespace(scheduler=self))
            return
        try:
            self.lock.extend(int(self.lock_timeout))
        except LockError:
            logger.warning("beat: lost the lock %s; standing by until it is free",
                           self.lock_key)
            self.lock.acquire()
            logger.info("beat: Acquired lock")


def _one_line_excepthook(
    kind: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    sys.stderr.write(f"beat stopped: {kind.__name__}: {exc}\n")
