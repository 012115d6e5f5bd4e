"""The producer side: validate failures and enqueue episodes by task name.

A producer never imports the worker's Celery app or its reasoners.
"""

from producer.api import InvalidInput, Producer

__all__ = ["InvalidInput", "Producer"]
