"""Beat as deployed: the Procfile's command line, from a working directory with no data
dir, sends its periodic tasks; two beats send each tick once, and the standby takes over
when the active one is killed; a beat that cannot start says why in one line."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ops import embedded
from schemas.settings import Settings
from schemas.tasks import DISTILL, FLUSH_BUFFERS, MERGE_QUEUE
from state import keys
from tests.services import ROOT, wait_until, worker_env
from worker.schedule import beat_lock_timeout, beat_loop_interval

# small intervals: distill every 2 s, flush every 1 s; the loop interval is then 1 s and
# the lock timeout 5 s
FAST = {"RIPMAP_DISTILL_INTERVAL_SECONDS": "2", "RIPMAP_PUSH_MAX_WAIT_SECONDS": "2"}


def procfile_command(name: str, env: dict[str, str]) -> list[str]:
    """The Procfile's command line for ``name``, with ``${VAR:-default}`` expanded from
    ``env`` and ``celery`` run from this interpreter's environment."""
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines()
                if line.startswith(f"{name}:"))
    command = line.split(":", 1)[1]
    command = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m[1]) or m[2], command)
    args = shlex.split(command)
    assert "$" not in " ".join(args), args
    if args[0] == "celery":
        args = [sys.executable, "-m", "celery", *args[1:]]
    return args


class Beat:
    """One beat process started from the Procfile's line, in ``cwd``, logging to a file."""

    def __init__(self, env: dict[str, str], cwd: Path, name: str) -> None:
        self.log = Path(tempfile.mkstemp(prefix=f"ripmap-beat-{name}-", suffix=".log")[1])
        self.proc = subprocess.Popen(procfile_command("beat", env), env=env, cwd=cwd,
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def active(self) -> bool:
        return "beat: Acquired lock" in self.text()

    def sent(self, entry: str) -> int:
        return self.text().count(f"Scheduler: Sending due task {entry} ")

    def stop(self) -> None:
        embedded.stop([self.proc], timeout=20)


@pytest.fixture
def beat_env(redis_url: str, client: redis.Redis, private_broker: str) -> dict[str, str]:
    """Small intervals, and a broker database nobody consumes: every message the beats
    send stays in its queue to be counted."""
    return worker_env(redis_url, RIPMAP_BROKER_URL=private_broker, **FAST)


@pytest.fixture
def bare_dir() -> Iterator[Path]:
    """A working directory with no ``.ripmap/`` (a fresh clone, a container)."""
    with tempfile.TemporaryDirectory(prefix="ripmap-beat-cwd-") as path:
        yield Path(path)


def sent_tasks(broker_url: str) -> list[str]:
    """The task name of every message waiting on the broker's merge queue."""
    queue = redis.Redis.from_url(broker_url).lrange(MERGE_QUEUE, 0, -1)
    return [json.loads(message)["headers"]["task"] for message in queue]


def test_the_procfile_beat_starts_without_a_data_dir_and_sends_its_tasks(
    beat_env: dict[str, str], bare_dir: Path, private_broker: str, client: redis.Redis
) -> None:
    beat = Beat(beat_env, bare_dir, "procfile")
    try:
        wait_until(lambda: sent_tasks(private_broker).count(DISTILL) >= 2
                   or beat.proc.poll() is not None, 30, "two distill messages on the merge queue")
        assert beat.proc.poll() is None, beat.text()[-3000:]
        tasks = sent_tasks(private_broker)
        assert FLUSH_BUFFERS in tasks
        # the schedule and its lock live in the state store, nothing on disk
        assert client.exists(keys.BEAT_LOCK)
        assert client.exists(keys.BEAT_PREFIX + "distill")
        assert not (bare_dir / ".ripmap").exists()
        assert list(bare_dir.iterdir()) == []
    finally:
        beat.stop()
    assert beat.proc.returncode == 0, beat.text()[-3000:]
    assert not client.exists(keys.BEAT_LOCK)  # released on a clean stop


def test_two_beats_send_each_tick_once_and_the_standby_takes_over(
    beat_env: dict[str, str], bare_dir: Path, private_broker: str
) -> None:
    settings = Settings(**{k[len("RIPMAP_"):].lower(): v for k, v in FAST.items()})
    lock_timeout, loop = beat_lock_timeout(settings), beat_loop_interval(settings)
    assert (loop, lock_timeout) == (1, 5)
    first = Beat(beat_env, bare_dir, "first")
    wait_until(first.active, 30, "the first beat to take the lock")
    second = Beat(beat_env, bare_dir, "second")
    try:
        wait_until(lambda: "beat: Starting..." in second.text(), 30, "the second beat to start")
        # both running: one sends, the other waits for the lock
        start, start_count = time.monotonic(), sent_tasks(private_broker).count(DISTILL)
        wait_until(lambda: sent_tasks(private_broker).count(DISTILL) >= start_count + 4, 30,
                   "four more distill ticks")
        elapsed = time.monotonic() - start
        ticks = sent_tasks(private_broker).count(DISTILL) - start_count
        # every 2 s by one beat; two sending would double it
        assert ticks <= elapsed / 2 + 1, (ticks, elapsed)
        assert first.proc.poll() is None and second.proc.poll() is None
        assert not second.active() and second.sent("distill") == 0, second.text()[-3000:]

        # the active beat dies without releasing its lock; the standby takes over once
        # the lock expires (lock timeout after its last renewal, plus one loop to notice)
        first.proc.kill()
        first.proc.wait()
        killed = time.monotonic()
        # (+3 s: the kill lands up to one loop after the last renewal, and a loaded machine)
        wait_until(second.active, lock_timeout + loop + 3, "the standby to take the lock")
        assert time.monotonic() - killed >= 1  # it waited for the lock to expire
        before = sent_tasks(private_broker).count(DISTILL)
        wait_until(lambda: sent_tasks(private_broker).count(DISTILL) > before, 10,
                   "the standby's first distill tick")
        assert second.sent("distill") >= 1
    finally:
        first.stop()
        second.stop()


def test_a_beat_that_cannot_start_says_why_in_one_line(bare_dir: Path, redis_url: str) -> None:
    closed = f"redis://127.0.0.1:{embedded.free_port()}/0"
    env = worker_env(redis_url, RIPMAP_REDIS_URL=closed, RIPMAP_BROKER_URL=closed, **FAST)
    done = subprocess.run(procfile_command("beat", env), env=env, cwd=bare_dir,
                          capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode != 0
    lines = (done.stdout + done.stderr).splitlines()
    reason = [line for line in lines if "beat cannot start" in line]
    assert len(reason) == 1, lines[-20:]
    assert closed.rsplit("/", 1)[0] in reason[0] and "ConnectionError" in reason[0]
    # no traceback, and no character-per-line fragments of one
    assert not any("Traceback" in line for line in lines), lines[-20:]
    fragments = [line for line in lines if re.search(r"\] \S?$", line)]
    assert fragments == [], fragments[:10]
    assert not os.path.exists(bare_dir / ".ripmap")
