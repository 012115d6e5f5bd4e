"""Chaos: break things on purpose, then prove nothing was lost and nothing doubled.

Every test runs real Celery workers (subprocesses) against its own redis-server, and most
reason with a fake ``claude`` on PATH (a script that answers, fails, hangs or prints
garbage as told). Sizes grow with ``RIPMAP_CHAOS_SCALE`` (``make chaos`` sets 4); the
default keeps the module to a few minutes on two cores. Each test records its figures
(``tests.reliability``); ``python -m tests.reliability`` puts them in RELIABILITY.md.

The accounting every test ends with: each batch sent is merged exactly once or
dead-lettered with a reason (never both, never neither), the episode log holds no batch
twice, and every aggregate of the scratchpad equals what the episode log adds up to.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from producer.api import Producer, chunk, validate_failures
from schemas import tasks
from schemas.failures import FailureBatch
from schemas.params import PARAM_SPECS, ParameterPoint
from schemas.settings import Settings
from state import deadletters, inbox, insights, keys, ledger, store, versions
from tests import reliability
from tests.factories import episode, failure
from tests.fake_claude import fake_claude
from tests.services import (
    ROOT,
    Worker,
    redis_server_binary,
    start_private_redis,
    wait_until,
    worker_env,
)
from worker import reducer
from worker.schedule import beat_schedule

pytestmark = pytest.mark.chaos

SCALE = reliability.scale()


def scaled(default: int) -> int:
    """``default`` times the chaos scale."""
    return max(1, round(default * SCALE))


def chaos_env(redis_url: str, folder: Path, **overrides: str) -> dict[str, str]:
    """Worker environment: the fake claude, and timeouts small enough that the visibility
    timeout is 6 s (2 x the 2 s CLI timeout + a 2 s margin), so a killed worker's tasks
    come back within seconds."""
    env = {"RIPMAP_REASONER": "claude-cli", "PATH": fake_claude(folder),
           "RIPMAP_CLAUDE_CLI_TIMEOUT_SECONDS": "2", "RIPMAP_LLM_TIMEOUT_SECONDS": "1",
           "RIPMAP_LLM_ATTEMPTS": "1", "RIPMAP_LLM_BACKOFF_MAX_SECONDS": "0",
           "RIPMAP_VISIBILITY_MARGIN_SECONDS": "2", "RIPMAP_LEDGER_CHECK_AFTER_SECONDS": "3"}
    return worker_env(redis_url, **{**env, **overrides})


def settings_for(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test process's settings, from the same environment the workers get."""
    for name in list(os.environ):
        if name.startswith("RIPMAP_") or name in ("REDIS_URL", "ANTHROPIC_API_KEY"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("RIPMAP_"):
            monkeypatch.setenv(name, value)
    return Settings()


# ------------------------------------------------------------------------ services we break

@dataclass
class RedisServer:
    """A private redis-server with AOF that can be killed and started again on its data."""

    proc: subprocess.Popen[bytes]
    url: str
    data: Path
    restarts: int = 0

    @classmethod
    def start(cls) -> RedisServer:
        proc, url, data = start_private_redis(appendonly=True)
        return cls(proc, url, data)

    def crash_and_restart(self, downtime: float) -> None:
        """SIGKILL (no clean shutdown), wait, start again on the same port and AOF."""
        self.proc.kill()
        self.proc.wait()
        time.sleep(downtime)
        port = self.url.rsplit(":", 1)[1].split("/")[0]
        args = [redis_server_binary(), "--port", port, "--bind", "127.0.0.1", "--dir",
                str(self.data), "--save", "", "--appendonly", "yes", "--daemonize", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from ops import embedded

        embedded.wait_for_redis(self.url, self.proc)
        self.restarts += 1

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of the test's own (it is crashed and restarted by some)."""
    s = RedisServer.start()
    yield s
    s.stop()


class Beat:
    """A standalone ``celery beat`` subprocess."""

    def __init__(self, env: dict[str, str], name: str) -> None:
        self.log = Path(tempfile.mkstemp(prefix=f"ripmap-{name}-", suffix=".log")[1])
        cmd = [sys.executable, "-m", "celery", "-A", "worker.app", "beat", "-l", "INFO",
               "-s", str(self.log.with_suffix(".schedule"))]
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=self.log.open("wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def sent(self, task: str) -> int:
        """How many times this beat has sent ``task``."""
        return self.log.read_text(errors="replace").count(f"({task})")


class Fleet:
    """Workers and beats a test started; all of them are stopped (or killed) at the end."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.workers: dict[str, Worker] = {}
        self.logs: list[Path] = []
        self.beats: list[Beat] = []
        self.kills = 0
        self.restarts = 0
        self.events: list[str] = []

    def start(self, name: str, **kwargs: Any) -> Worker:
        """Start (or restart) the worker called ``name``."""
        w = Worker(self.env, name=name, **kwargs).wait_ready()
        self.workers[name] = w
        self.logs.append(w.log)
        return w

    def beat(self, name: str) -> Beat:
        b = Beat(self.env, name)
        self.beats.append(b)
        wait_until(lambda: b"beat: Starting" in b.log.read_bytes() or b.proc.poll() is not None,
                   30, f"{name} started")
        assert b.proc.poll() is None, b.log.read_text()[-2000:]
        return b

    def kill(self, name: str) -> None:
        """SIGKILL a whole worker (its process group: pool children, claude calls)."""
        w = self.workers[name]
        _killpg(w.proc.pid)
        w.proc.wait()
        self.kills += 1
        self.events.append(f"{time.strftime('%H:%M:%S')} killed {name} ({w.log.name})")

    def kill_pool_child(self, name: str) -> bool:
        """SIGKILL one prefork pool process of worker ``name``, a busy one if any."""
        children = _children(self.workers[name].proc.pid)
        busy = [c for c in children if _children(c)]
        victims = busy or children
        if not victims:
            return False
        victim = random.choice(victims)
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            return False
        self.kills += 1
        self.events.append(f"{time.strftime('%H:%M:%S')} killed a pool process {victim} of "
                           f"{name} ({self.workers[name].log.name})")
        return True

    def busy(self, name: str) -> bool:
        """Whether worker ``name`` is running a claude call right now (at any depth)."""
        def any_below(pid: int, depth: int) -> bool:
            kids = _children(pid)
            return bool(kids) if depth == 0 else any(any_below(k, depth - 1) for k in kids)
        pid = self.workers[name].proc.pid
        return any_below(pid, 1 if "prefork" in name else 0)

    def deliveries(self, task: str) -> Counter[str]:
        """How many times each task id of ``task`` was received, over every worker log."""
        pattern = re.compile(rf"Task {re.escape(task)}\[([^\]]+)\] received")
        return Counter(m for log in self.logs for m in pattern.findall(
            log.read_text(errors="replace")))

    def trace(self, ids: set[str]) -> str:
        """Every worker log line about these batch ids, and how each log ends."""
        out = []
        for log in self.logs:
            lines = log.read_text(errors="replace").splitlines()
            hits = [line[:200] for line in lines if any(i in line for i in ids)]
            if hits:
                out += [f"-- {log}", *hits, *(line[:200] for line in lines[-2:])]
        out += [f"kill log: {self.events}"]
        return "\n".join(out)

    def close(self) -> None:
        for w in self.workers.values():
            if w.proc.poll() is None:
                w.stop(timeout=20)
        for b in self.beats:
            _stop(b.proc)


@pytest.fixture
def fleets() -> Iterator[list[Fleet]]:
    """Fleets to close at the end of the test, whatever happened."""
    made: list[Fleet] = []
    yield made
    for f in made:
        f.close()


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid)
            proc.wait()


# ------------------------------------------------------------------------------ accounting

@dataclass
class Accounting:
    """Where every batch sent ended up."""

    sent: set[str]
    merged: set[str]
    dead: dict[str, str]  # batch id -> reason
    log_ids: list[str]
    mismatches: list[str] = field(default_factory=list)

    @property
    def lost(self) -> set[str]:
        return self.sent - self.merged - set(self.dead)

    @property
    def both(self) -> set[str]:
        return self.merged & set(self.dead)

    @property
    def duplicated(self) -> int:
        return len(self.log_ids) - len(set(self.log_ids))

    def assert_exact(self) -> None:
        """Merged exactly once or dead-lettered with a reason; aggregates match the log."""
        assert not self.lost, f"{len(self.lost)} batches lost: {sorted(self.lost)[:5]}"
        assert not self.both, f"{len(self.both)} merged AND dead-lettered: {sorted(self.both)[:5]}"
        assert self.duplicated == 0, f"{self.duplicated} batches merged twice"
        assert set(self.log_ids) == self.merged
        assert all(reason.strip() for reason in self.dead.values())
        assert not self.mismatches, "aggregates disagree with the episode log:\n" + "\n".join(
            self.mismatches)

    def figures(self) -> dict[str, int]:
        return {"batches": len(self.sent), "merged": len(self.merged),
                "dead_lettered": len(self.dead), "lost": len(self.lost),
                "duplicated": self.duplicated + len(self.both)}


def account(client: redis.Redis, sent: set[str]) -> Accounting:
    """Read the outcome of every batch, the episode log and the aggregates."""
    ids = sorted(sent)
    merged = {i for i, m in zip(ids, store.merged_flags(client, ids), strict=True) if m}
    letters = {d.id: d.reason for d in deadletters.list_all(client, 1_000_000)}
    log = [json.loads(x) for x in client.lrange(keys.EPISODE_LOG, 0, -1)]
    acc = Accounting(sent, merged, {i: r for i, r in letters.items() if i in sent},
                     [e["batch_id"] for e in log])
    acc.mismatches = aggregate_mismatches(client, log)
    return acc


def aggregate_mismatches(client: redis.Redis, log: list[dict[str, Any]]) -> list[str]:
    """Every scratchpad aggregate recomputed from the episode log; what differs."""
    ok = [e for e in log if e["status"] == "ok"]
    expected_stats = {
        "episodes": len(log),
        "unparsable": len(log) - len(ok),
        "proposals": sum(len(e["answer"]["proposed_changes"]) for e in ok),
        "dropped_proposals": sum(e["dropped_proposals"] for e in log),
        "failures": sum(e["failure_count"] for e in log),
    }
    stats = client.hgetall(keys.STATS)
    out = [f"stats.{k}: {stats.get(k, '0')} != {v}" for k, v in expected_stats.items()
           if int(stats.get(k, 0)) != v]
    changes = Counter(f"{c['param']}:{c['direction']}" for e in ok
                      for c in e["answer"]["proposed_changes"])
    actual_changes = {k: int(v) for k, v in client.hgetall(keys.CHANGES).items()}
    if actual_changes != dict(changes):
        out.append(f"changes: {actual_changes} != {dict(changes)}")
    per_kind = {
        "interactions": [e["answer"]["param_interactions"] for e in ok],
        "structural": [e["answer"]["structural_insights"] for e in ok],
        "signatures": [e["failure_signatures"] for e in log],
    }
    for kind, lists in per_kind.items():
        expected = Counter(h for texts in lists for h, _ in insights.items(texts))
        actual = {h: int(float(s)) for h, s in
                  client.zrange(keys.insights(kind), 0, -1, withscores=True)}
        if actual != dict(expected):
            out.append(f"insights {kind}: {len(actual)} kinds / {sum(actual.values())} counts "
                       f"!= {len(expected)} / {sum(expected.values())}")
    return out


def broker_idle(settings: Settings) -> bool:
    """No message queued or held unacknowledged anywhere."""
    b = redis.Redis.from_url(settings.broker)
    try:
        return not (b.llen(tasks.EPISODE_QUEUE) or b.llen(tasks.MERGE_QUEUE)
                    or b.hlen("unacked"))
    finally:
        b.close()


def wait_settled(client: redis.Redis, settings: Settings, sent: set[str], timeout: float) -> None:
    """Until every batch is merged or dead-lettered and the broker holds nothing more
    (a killed worker's messages were redelivered and ran)."""
    ids = sorted(sent)

    def settled() -> bool:
        merged = store.merged_flags(client, ids)
        dead = deadletters.exists_flags(client, ids)
        return all(m or d for m, d in zip(merged, dead, strict=True)) and broker_idle(settings)

    try:
        wait_until(settled, timeout, f"{len(ids)} batches settled and the broker idle",
                   every=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {_unsettled(client, settings, ids)}") from None


def wait_quiet(client: redis.Redis, settings: Settings, sent: set[str], timeout: float,
               quiet: float) -> None:
    """Until every batch is settled, or the broker has held nothing (queued or unacked) for
    ``quiet`` seconds: then nothing left can ever come back, and what is open is lost."""
    ids = sorted(sent)
    idle_since: list[float] = []

    def done() -> bool:
        if not broker_idle(settings):
            idle_since.clear()
            return False
        merged = store.merged_flags(client, ids)
        dead = deadletters.exists_flags(client, ids)
        if all(m or d for m, d in zip(merged, dead, strict=True)):
            return True
        if not idle_since:
            idle_since.append(time.monotonic())
        return time.monotonic() - idle_since[0] > quiet

    try:
        wait_until(done, timeout, f"{len(ids)} batches settled or the broker quiet", every=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {_unsettled(client, settings, ids)}") from None


def _unsettled(client: redis.Redis, settings: Settings, ids: list[str]) -> str:
    """What is still open, for the failure message."""
    merged = store.merged_flags(client, ids)
    dead = deadletters.exists_flags(client, ids)
    open_ids = [i for i, m, d in zip(ids, merged, dead, strict=True) if not (m or d)]
    b = redis.Redis.from_url(settings.broker, decode_responses=True)
    try:
        oldest = b.zrange("unacked_index", 0, 3, withscores=True)
        return (f"{len(open_ids)} batches neither merged nor dead-lettered {open_ids[:3]}; "
                f"queued {b.llen(tasks.EPISODE_QUEUE)} episodes, {b.llen(tasks.MERGE_QUEUE)} "
                f"merges; {b.hlen('unacked')} unacked (oldest {oldest}); "
                f"sweep mutex ttl {b.ttl('unacked_mutex')}; now {time.time():.0f}")
    finally:
        b.close()


def batches(count: int, salt: str) -> list[FailureBatch]:
    """``count`` distinct batches of five failures, new ones each run (so worker logs of
    different runs never share a batch id)."""
    salt = f"{salt} {uuid.uuid4().hex[:8]}"
    records = [failure(i, query=f"{salt} query {i}") for i in range(count * 5)]
    return chunk(validate_failures(records), 5)


def params_within_bounds(client: redis.Redis) -> tuple[int, int]:
    """Check every version's parameters (and the live hash) lie inside the safe step range;
    returns (versions checked, versions with a parameter clamped at a bound)."""
    seen = clamped = 0
    for record, _ in versions.history(client, 10_000):
        for name, value in record.params.as_floats().items():
            spec = PARAM_SPECS[name]
            assert spec.accepts(value), (record.version, name, value)
            assert value == spec.default or spec.floor <= value <= spec.ceiling, (name, value)
        seen += 1
        clamped += any(value in (PARAM_SPECS[n].floor, PARAM_SPECS[n].ceiling)
                       for n, value in record.params.as_floats().items())
    live = store.get_params(client)  # validated on read: raises if out of bounds
    assert isinstance(live, ParameterPoint)
    return seen, clamped


# ---------------------------------------------------------------------------------- tests

def test_sigkilled_workers_lose_and_double_nothing(
    server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fleets: list[Fleet]
) -> None:
    """(a) Batches while worker processes are SIGKILLed at random moments and restarted:
    nothing is lost or merged twice. A message in flight from Redis to a worker when it is
    killed is lost by the broker (kombu pops with BRPOP before recording the message as
    unacknowledged); the open-batch ledger's sweep, on the beat, sends such a batch again."""
    rng = random.Random()
    env = chaos_env(server.url, tmp_path / "bin", FAKE_CLAUDE_DELAY="0.4")
    settings = settings_for(env, monkeypatch)
    client = store.connect(server.url)
    fleet = Fleet(env)
    fleets.append(fleet)
    fleet.start("threads", pool="threads", concurrency=4)
    fleet.start("prefork", pool="prefork", concurrency=2)
    fleet.beat("beat")
    todo = batches(scaled(75), "kills")
    kills = max(5, scaled(6))
    producer = Producer(settings)
    sent: set[str] = set()
    per_round = -(-len(todo) // (kills + 1))
    for k in range(kills):
        sent |= {r.batch_id for r in map(producer.enqueue_batch,
                                         todo[k * per_round:(k + 1) * per_round])}
        # a random moment while the target is busy (it has a claude call running)
        target = ("threads", "prefork-child", "prefork")[k % 3]
        name = "prefork" if target.startswith("prefork") else target
        time.sleep(rng.uniform(0.05, 0.6))
        deadline = time.monotonic() + 3
        while not fleet.busy(name) and time.monotonic() < deadline:
            time.sleep(0.02)
        if target == "prefork-child" and fleet.kill_pool_child(name):
            continue
        fleet.kill(name)
        fleet.start(name, pool="threads" if name == "threads" else "prefork",
                    concurrency=4 if name == "threads" else 2)
        fleet.restarts += 1
    sent |= {r.batch_id for r in map(producer.enqueue_batch, todo[kills * per_round:])}
    producer.close()

    # quiet long enough for a lost batch to be re-sent (redelivery of the unacknowledged,
    # then the ledger's check age, two sweeps one schedule interval apart, the re-send) and
    # for an inbox whose drain was never sent to be drained (its flag expires, then a sweep)
    sweep = beat_schedule(settings)["sweep-open-batches"]["schedule"]
    wait_quiet(client, settings, sent, timeout=150 + 30 * SCALE,
               quiet=settings.visibility_timeout + settings.ledger_check_after_seconds
               + 3 * sweep + inbox.FLAG_TTL + 5)
    acc = account(client, sent)
    deliveries = fleet.deliveries(tasks.REASON_EPISODE)
    resent = ledger.resent_count(client)
    reliability.record("chaos_worker_kills", **acc.figures(), kills=fleet.kills,
                       restarts=fleet.restarts,
                       redelivered=sum(deliveries.values()) - len(deliveries),
                       resent_by_ledger=resent,
                       versions=len(versions.history(client, 10_000)) - 1)
    assert not acc.lost, f"lost:\n{fleet.trace(acc.lost)}"
    assert ledger.open_count(client) == 0  # every batch closed: merged or dead-lettered
    acc.assert_exact()
    assert len(acc.sent) == len(todo) and fleet.kills >= 5
    # the kills hit work in flight: some episodes ran more than once, harmlessly
    assert sum(deliveries.values()) > len(deliveries)
    params_within_bounds(client)


def test_redis_crash_and_restart_mid_run(
    server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fleets: list[Fleet]
) -> None:
    """(b) Redis (AOF on) is SIGKILLed and restarted while a producer enqueues, workers
    reason and a beat distills: every acknowledged submission is merged once, and every
    process reconnects without crashing."""
    env = chaos_env(server.url, tmp_path / "bin", FAKE_CLAUDE_DELAY="0.2",
                    RIPMAP_DISTILL_INTERVAL_SECONDS="2")
    settings = settings_for(env, monkeypatch)
    client = store.connect(server.url)
    fleet = Fleet(env)
    fleets.append(fleet)
    worker = fleet.start("worker", pool="threads", concurrency=4)
    beat = fleet.beat("beat")
    todo = batches(scaled(60), "restart")
    restarts = max(1, scaled(1) // 2)
    acked: set[str] = set()
    errors = 0

    def produce() -> None:
        nonlocal errors
        producer = Producer(settings)
        for batch in todo:
            while True:  # what a caller does: retry until the submission is acknowledged
                try:
                    producer.enqueue_batch(batch)
                    acked.add(batch.batch_id)
                    break
                except Exception:
                    errors += 1
                    time.sleep(0.2)
            time.sleep(0.05)
        producer.close()

    thread = threading.Thread(target=produce)
    thread.start()
    restarted_at = 0.0
    for r in range(restarts):
        wait_until(lambda r=r: len(acked) >= len(todo) * (r + 1) // (restarts + 1), 120,
                   "submissions before the restart")
        server.crash_and_restart(downtime=1.5)
        restarted_at = time.time()
    thread.join(180)
    assert not thread.is_alive()

    wait_settled(client, settings, acked, timeout=150)

    def distilled_since_restart() -> bool:
        wisdom = store.latest_wisdom(client)
        return wisdom is not None and wisdom.created_at > restarted_at

    # the beat reconnected and keeps distilling after the restart
    wait_until(distilled_since_restart, 60, "a distillation after the restart")
    acc = account(client, acked)
    deliveries = fleet.deliveries(tasks.REASON_EPISODE)
    reliability.record("chaos_redis_restart", **acc.figures(), restarts=server.restarts,
                       submit_errors_retried=errors,
                       redelivered=sum(deliveries.values()) - len(deliveries))
    acc.assert_exact()
    assert acked == {b.batch_id for b in todo}
    assert worker.proc.poll() is None and beat.proc.poll() is None  # no crash, no exit
    assert server.restarts == restarts


def test_reasoner_faults_at_thirty_percent(
    server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fleets: list[Fleet]
) -> None:
    """(c) The reasoner fails, hangs or talks garbage on 30% of calls: each batch still ends
    merged once or dead-lettered with the reason, and parameters stay within bounds."""
    calls = tmp_path / "claude-calls.log"
    env = chaos_env(server.url, tmp_path / "bin", FAKE_CLAUDE_DELAY="0.05",
                    FAKE_CLAUDE_FAULTS="0.3", FAKE_CLAUDE_LOG=str(calls),
                    RIPMAP_CLAUDE_CLI_TIMEOUT_SECONDS="1")
    settings = settings_for(env, monkeypatch)
    client = store.connect(server.url)
    fleet = Fleet(env)
    fleets.append(fleet)
    fleet.start("worker", pool="threads", concurrency=6)
    producer = Producer(settings)
    sent = {r.batch_id for r in producer.enqueue([f for b in batches(scaled(75), "faults")
                                                  for f in b.failures])}
    wait_settled(client, settings, sent, timeout=120 + 30 * SCALE)
    # distillations asked for by hand answer even when the reasoner fails them
    requests = [producer.distill() for _ in range(4)]
    wait_until(lambda: all(store.distill_result(client, r) for r in requests), 60,
               "every requested distillation answered")
    producer.close()

    acc = account(client, sent)
    outcomes = Counter(calls.read_text().split())
    checked, clamped = params_within_bounds(client)
    reliability.record("chaos_reasoner_faults", **acc.figures(),
                       faults=sum(n for k, n in outcomes.items() if k != "ok"),
                       reasoner_calls=sum(outcomes.values()),
                       unparsable=int(client.hget(keys.STATS, "unparsable") or 0),
                       versions=checked - 1, versions_at_a_bound=clamped)
    acc.assert_exact()
    assert outcomes["error"] and outcomes["hang"] and outcomes["garbage"]
    assert all(("reasoner" in r or "failed" in r) for r in acc.dead.values()), acc.dead
    assert checked > 1 and clamped >= 1  # steps were taken, and some pushed into a bound
    for request in requests:
        result = store.distill_result(client, request)
        assert result and result["status"] in ("distilled", "unparsable", "failed",
                                               "locked", "nothing-new"), result


def _publish_merge_copies(client: redis.Redis, settings: Settings) -> int:
    """Deliver every merge twice: each episode in the reducer's inbox once more as a
    ``merge_insights`` message, and each queued drain message once more."""
    b = redis.Redis.from_url(settings.broker)
    drains = b.lrange(tasks.MERGE_QUEUE, 0, -1)
    b.close()
    sender = Celery(broker=settings.broker)
    for raw in client.hvals(keys.INBOX):
        sender.send_task(tasks.MERGE_INSIGHTS, args=[json.loads(raw)], queue=tasks.MERGE_QUEUE)
    for message in drains:
        envelope = json.loads(message)
        args, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
        sender.send_task(envelope["headers"]["task"], args=args, kwargs=kwargs,
                         queue=tasks.MERGE_QUEUE)
    sender.close()
    return client.hlen(keys.INBOX) + len(drains)


def _run_deliveries(env: dict[str, str], settings: Settings, todo: list[FailureBatch],
                    copies: int, fleets: list[Fleet]) -> tuple[dict[str, Any], int]:
    """Reason every batch (each published ``copies`` times) with merges held back, deliver
    each merge ``copies`` times, then merge; returns the aggregates and messages sent."""
    client = store.connect(settings.state_url)
    client.flushdb()
    redis.Redis.from_url(settings.broker).flushdb()
    fleet = Fleet(env)
    fleets.append(fleet)
    fleet.start("episodes", queues=tasks.EPISODE_QUEUE, concurrency=4)
    sender = Celery(broker=settings.broker)
    for batch in todo:
        for _ in range(copies):
            sender.send_task(tasks.REASON_EPISODE, args=[batch.model_dump(mode="json")],
                             task_id=batch.batch_id, queue=tasks.EPISODE_QUEUE)
    sender.close()
    broker = redis.Redis.from_url(settings.broker)
    wait_until(lambda: client.hlen(keys.INBOX) == len(todo)
               and not broker.llen(tasks.EPISODE_QUEUE) and not broker.hlen("unacked"),
               90, "every copy reasoned")
    fleet.close()
    drains = broker.llen(tasks.MERGE_QUEUE)
    extra = _publish_merge_copies(client, settings) if copies > 1 else 0
    fleet.start("merge", queues=tasks.MERGE_QUEUE, concurrency=4)
    sent = {b.batch_id for b in todo}
    wait_settled(client, settings, sent, timeout=90)
    fleet.close()
    acc = account(client, sent)
    acc.assert_exact()
    return aggregates(client), len(todo) * copies + drains + extra


def aggregates(client: redis.Redis) -> dict[str, Any]:
    """The scratchpad's aggregates, without timestamps (float sums rounded: their order
    of addition may differ)."""
    stats = client.hgetall(keys.STATS)
    stats.pop("last_merged_at", None)
    stats["confidence_sum"] = round(float(stats.get("confidence_sum", 0)), 6)
    history = versions.history(client, 10_000)
    return {
        "stats": stats,
        "changes": client.hgetall(keys.CHANGES),
        "confidence": {k: round(float(v), 6) for k, v in client.hgetall(keys.CONFIDENCE).items()},
        "insights": {kind: client.zrange(keys.insights(kind), 0, -1, withscores=True)
                     for kind in keys.INSIGHT_KINDS},
        # how many votes a quorum step gathers depends on merge timing, not on delivery;
        # what must hold is that no step counts an episode's vote twice
        "versions": len(history),
        "steps_counting_a_vote_twice": sum(len({v.episode_id for v in r.provenance})
                                           != len(r.provenance) for r, _ in history),
        "log": sorted(json.loads(e)["batch_id"] for e in client.lrange(keys.EPISODE_LOG, 0, -1)),
    }


def test_every_message_delivered_twice_changes_nothing(
    server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fleets: list[Fleet]
) -> None:
    """(d) Every reason_episode message delivered twice, every episode merged twice (by its
    drain and by a merge_insights copy) and every drain message twice give the same
    aggregates as single delivery (the heuristic reasoner is deterministic)."""
    env = worker_env(server.url)
    settings = settings_for(env, monkeypatch)
    todo = batches(scaled(40), "dup")
    single, messages_single = _run_deliveries(env, settings, todo, 1, fleets)
    double, messages_double = _run_deliveries(env, settings, todo, 2, fleets)
    reliability.record("chaos_duplicate_delivery", batches=len(todo),
                       messages_single=messages_single, messages_duplicated=messages_double,
                       merged=len(double["log"]), lost=len(todo) - len(set(double["log"])),
                       duplicated=len(double["log"]) - len(set(double["log"])))
    assert single["log"] == double["log"] == sorted(b.batch_id for b in todo)
    assert double == single


def test_two_beats_distill_once_per_tick(
    server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fleets: list[Fleet]
) -> None:
    """(e) Two beats (compose runs two replicas) for five ticks: the one holding the
    schedule's lock sends, the other stands by and sends nothing; one distillation per tick,
    and no vote counted in two parameter steps."""
    env = worker_env(server.url, RIPMAP_DISTILL_INTERVAL_SECONDS="2",
                     RIPMAP_CONSENSUS_QUORUM="1000", RIPMAP_CONSENSUS_MAX_WAIT_SECONDS="1")
    settings = settings_for(env, monkeypatch)
    client = store.connect(server.url)
    fleet = Fleet(env)
    fleets.append(fleet)
    fleet.start("merge", queues=tasks.MERGE_QUEUE, concurrency=2)
    stop = threading.Event()
    change = {"param": "boost_chat_file", "direction": "decrease", "magnitude": "small"}

    def feed() -> None:  # something new to distill (and a vote) between any two ticks
        c, i = store.connect(server.url), 0
        while not stop.is_set():
            ep = episode(i, answer={"proposed_changes": [change], "confidence": 0.7,
                                    "structural_insights": [f"s{i % 7}"]},
                         params_version=versions.current_number(c))
            reducer.merge(c, ep, settings)
            i += 1
            time.sleep(0.1)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        first = fleet.beat("beat-a")
        time.sleep(0.7)  # the second beat's ticks fall between the first's
        second = fleet.beat("beat-b")
        ticks = 5
        wait_until(lambda: first.sent(tasks.DISTILL) + second.sent(tasks.DISTILL) >= ticks,
                   20 + 4 * ticks, f"{ticks} ticks")
        for b in (first, second):
            _stop(b.proc)
    finally:
        stop.set()
        feeder.join()
    wait_until(lambda: broker_idle(settings), 30, "the merge queue drained")
    a, b = first.sent(tasks.DISTILL), second.sent(tasks.DISTILL)
    results = _task_results(fleet, tasks.DISTILL)
    distilled = [r for r in results if r.get("status") == "distilled"]
    history = versions.history(client, 10_000)
    votes = [v.episode_id for r, _ in history for v in r.provenance]
    reliability.record("chaos_two_beats", ticks_sent=a + b, ticks_per_beat=max(a, b),
                       distillations=len(distilled), parameter_steps=len(history) - 1,
                       votes_counted_twice=len(votes) - len(set(votes)),
                       duplicated=max(0, len(distilled) - max(a, b) - 1))
    assert min(a, b) == 0 and max(a, b) >= ticks  # the standby sent nothing
    assert len(results) >= max(a, b)  # every tick was handled
    # one distillation per tick window (a tick that finds nothing new merged skips itself)
    assert 3 <= len(distilled) <= max(a, b), (a, b, results)
    ticks_distilled = [r.get("tick") for r in distilled]
    assert len(set(ticks_distilled)) == len(ticks_distilled), ticks_distilled
    assert store.summary(client).wisdom_version == len(distilled)
    assert len(history) > 1 and len(votes) == len(set(votes))


def _task_results(fleet: Fleet, task: str) -> list[dict[str, Any]]:
    """The return values of ``task`` logged by the fleet's workers."""
    pattern = re.compile(rf"Task {re.escape(task)}\[[^\]]+\] succeeded in [\d.e-]+s: (\{{.*\}})")
    out = []
    for log in fleet.logs:
        for text in pattern.findall(log.read_text(errors="replace")):
            out.append(ast.literal_eval(text))  # a logged dict's repr
    return out


def test_merged_batch_is_not_left_dead_lettered_by_its_redelivery(
    server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fleets: list[Fleet]
) -> None:
    """(f) A batch reasoned once (its merge still queued), then redelivered to a reasoner
    that now fails: once merged, it must not also sit in the dead letters."""
    env = chaos_env(server.url, tmp_path / "bin", FAKE_CLAUDE_ONCE=str(tmp_path / "called"))
    settings = settings_for(env, monkeypatch)
    client = store.connect(server.url)
    fleet = Fleet(env)
    fleets.append(fleet)
    fleet.start("episodes", queues=tasks.EPISODE_QUEUE, concurrency=1)
    producer = Producer(settings)
    [batch] = batches(1, "race")
    producer.enqueue_batch(batch)
    broker = redis.Redis.from_url(settings.broker)
    wait_until(lambda: broker.llen(tasks.MERGE_QUEUE) == 1, 30, "the first run's merge queued")
    # the redelivery (as after a kill before the ack): the reasoner fails this time
    producer.send(tasks.REASON_EPISODE, [batch.model_dump(mode="json")], batch.batch_id)
    wait_until(lambda: deadletters.exists_flags(client, [batch.batch_id])[0], 30,
               "the failing redelivery dead-lettered")
    fleet.start("merge", queues=tasks.MERGE_QUEUE, concurrency=1)
    wait_settled(client, settings, {batch.batch_id}, timeout=30)
    producer.close()
    acc = account(client, {batch.batch_id})
    acc.assert_exact()
    assert acc.merged == {batch.batch_id} and not acc.dead
