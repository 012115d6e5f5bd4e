"""Shared Redis state: keys, Lua scripts and every read and write of the state store.

No Celery import: the producer, the worker and the operator tools all build on it.
"""
