"""A workaround for kombu's Redis transport, applied once when the Celery app loads.

kombu 5.7 (with celery 5.7): when the broker connection is lost, Celery releases the
transport (its ``client`` becomes None), but channels of the lost connection still
reconnect through it: to restore unacked messages while closing, and to ack the tasks
that were running. Reading the released transport's host raised AttributeError, which
stopped the worker ("Unrecoverable error"). Raised as a connection error instead, it is
logged and ignored; the messages concerned stay unacknowledged in Redis and are redelivered
after the visibility timeout.

The patch applies to kombu 5.x only: a later major version must be checked against this
behaviour before the guard is widened.
"""

from __future__ import annotations

from typing import Any

import kombu
import redis
from kombu.transport import redis as redis_transport

PATCHED_MAJOR = 5
_original_connparams = redis_transport.Channel._connparams


def applies(version: str = kombu.__version__) -> bool:
    """True for the kombu versions whose transport has the behaviour worked around."""
    return int(version.split(".")[0]) == PATCHED_MAJOR


def _connparams(self: Any, asynchronous: bool = False) -> Any:
    if self.connection.client is None:
        raise redis.ConnectionError("the broker connection of this channel was released")
    return _original_connparams(self, asynchronous=asynchronous)  # type: ignore[no-untyped-call]


def apply() -> bool:
    """Install the workaround where it applies; True when installed."""
    if not applies():
        return False
    redis_transport.Channel._connparams = _connparams  # type: ignore[method-assign]
    return True
