"""Celery configuration, derived from the one Settings object."""

from __future__ import annotations

from typing import Any

from schemas.settings import Settings
from schemas.tasks import EPISODE_QUEUE, TASK_QUEUES
from state import keys, ledger, store
from worker.schedule import beat_lock_timeout, beat_loop_interval, beat_schedule


def celery_config(settings: Settings) -> dict[str, Any]:
    """Everything Celery reads, as a dict for ``app.conf.update``."""
    vt = settings.visibility_timeout
    transport = {
        "visibility_timeout": vt,
        # kombu sweeps a dead worker's unacknowledged messages back into their queue only
        # every interval x throttle seconds (10 x 10 by default): sweep every vt/10 seconds
        # (1..10) instead, so redelivery comes at most ~10 s after the visibility timeout.
        "unacked_restore_interval": max(1, min(10, vt // 10)),
        "unacked_restore_throttle": 1,
        # a worker killed while sweeping holds the sweep's mutex until it expires (300 s by
        # default): no longer than the visibility timeout itself
        "unacked_mutex_expire": min(300, vt),
        # every task acks (late) from its own thread or greenlet through the channel's
        # connection pool, which fails beyond its limit (10 by default) instead of waiting:
        # room for every episode slot (settings cap the concurrency at 1024)
        "max_connections": 1024,
    }
    redis_options = store.RedisOptions.from_settings(settings)
    return {
        "broker_url": settings.broker,
        "broker_connection_retry_on_startup": True,
        # on AMQP, publisher confirms: the ledger's sweep trusts a publish that returned;
        # through Sentinel, the master's name
        "broker_transport_options": {
            **transport, **ledger.publish_options(settings.broker),
            **store.broker_sentinel_options(settings.broker, redis_options)},
        # rediss://: the TLS options from the settings (kombu checks no certificate without)
        "broker_use_ssl": store.broker_use_ssl(settings.broker, redis_options),
        # Celery reads the visibility timeout in three places; all must agree, and all
        # exceed the worst-case episode so a live task is never redelivered.
        "result_backend_transport_options": transport,
        "visibility_timeout": settings.visibility_timeout,
        # No result backend: outcomes live in the state store, which the CLI and API read.
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # At-least-once: a message is acked after its task ran; a killed worker's message
        # is redelivered, and every task's effect is idempotent.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_soft_shutdown_timeout": 30.0,
        # a publish (an episode's merge, a beat tick) waits out a broker restart (~1 min)
        # rather than failing the task that holds a reasoned episode
        "task_publish_retry_policy": {"max_retries": 30, "interval_start": 0,
                                      "interval_step": 0.5, "interval_max": 2},
        "task_default_queue": EPISODE_QUEUE,
        "task_routes": {name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        # inside the margin, so a task stuck past every timeout is stopped before redelivery
        "task_soft_time_limit": vt - 0.4 * settings.visibility_margin_seconds,
        "task_time_limit": vt - 0.2 * settings.visibility_margin_seconds,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "beat_schedule": beat_schedule(settings),
        # The schedule and its lock live in the state store (celery-redbeat): no schedule
        # file, and any number of beats: the one holding the lock sends, the others wait
        # for it (trying every loop interval) and take over when it has not been renewed
        # for the lock timeout (worker/schedule.py says how both derive from the settings).
        "beat_scheduler": "worker.schedule:Scheduler",
        "beat_max_loop_interval": beat_loop_interval(settings),
        # the state store's own client options (none of the broker's transport options);
        # a Redis blip shorter than the lock timeout is retried, not fatal
        **_redbeat_redis(settings.state_url, redis_options,
                         {"retry_period": beat_lock_timeout(settings)}),
        "redbeat_key_prefix": keys.BEAT_PREFIX,
        "redbeat_lock_key": keys.BEAT_LOCK,
        "redbeat_lock_timeout": beat_lock_timeout(settings),
    }


def _redbeat_redis(url: str, options: store.RedisOptions, base: dict[str, Any]
                   ) -> dict[str, Any]:
    """How redbeat reaches the state store: its URL and client options, with the TLS
    options for ``rediss://``, and for ``sentinel://`` redbeat's own Sentinel form (a
    ``redis-sentinel://`` URL, the sentinels and the master's name and database)."""
    if store.url_scheme(url) == store.SENTINEL_SCHEME:
        target = store.parse_sentinel_url(url)
        sentinel = {"sentinels": target.sentinels, "service_name": options.master(),
                    "db": target.db, "password": target.password,
                    "username": target.username, "socket_timeout": 30}
        hosts = ",".join(f"{h}:{p}" for h, p in target.sentinels)
        return {"redbeat_redis_url": f"redis-sentinel://{hosts}/{target.db}",
                "redbeat_redis_options": {**base, **sentinel}}
    out = {"redbeat_redis_url": url, "redbeat_redis_options": base}
    if store.url_scheme(url) == "rediss":
        out["redbeat_redis_use_ssl"] = options.ssl_kwargs()
    return out
