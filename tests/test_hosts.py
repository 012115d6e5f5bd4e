"""Several hosts and a partition: the store and broker, two episode-worker hosts and the
merge worker each in a network namespace of their own, one worker host cut off mid-episode.

The test makes four namespaces (``tests.netns``): ``redis`` holds the redis-server (state
store = db 0, broker = db 1) and a bridge; ``w1`` and ``w2`` run an episode worker each,
``merge`` the merge worker with beat, each joined to the bridge by a veth pair, with
addresses from a /24 that exists only inside these namespaces. The producer runs in the
``redis`` namespace as a client over TCP; the test process itself reads the outcome over
the server's unix socket (so nothing is added to the test's own network namespace).

Episodes reason with the fake ``claude`` (a delay of up to 2 s), so a visibility timeout of
8 s covers the worst-case episode. Mid-run, while w1 has episodes running, its cable is
pulled (its bridge port set down): its sockets stay open and silent, as on a real
partition. The test keeps the link down until every batch w1 held has been delivered
again to w2 (kombu's sweep, on any live worker, puts an unacknowledged message back once
it is older than the visibility timeout), then plugs it back in and sends a second wave.

Then: every batch merged exactly once, none dead-lettered, the episode count equal to the
batches sent, every batch w1 was holding delivered again after at least the visibility
timeout, and w1 back at work after the link came back. The figures go to
``tests.reliability`` and RELIABILITY.md ("Several hosts and a partition").
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from producer.api import chunk, validate_failures
from schemas import tasks
from state import inbox, keys, ledger, store
from tests import netns, reliability
from tests.factories import failure
from tests.fake_claude import fake_claude
from tests.services import ROOT, Worker, redis_server_binary, wait_until, worker_env
from tests.test_chaos import account, broker_idle, settings_for, wait_settled

HOSTS = ["redis", "w1", "w2", "merge"]  # the first is the hub: the bridge, the server
PORT = 6379
FIRST_WAVE = 60  # batches before and during the partition
SECOND_WAVE = 20  # batches after the link came back


@pytest.fixture
def network() -> Iterator[netns.Network]:
    """The four hosts' namespaces, deleted at the end whatever happened (with anything
    still running in them); namespaces a crashed run left behind are removed first."""
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")
    netns.clean_stale()
    try:
        net = netns.Network.create(HOSTS)
    except netns.Unavailable as exc:
        pytest.skip(f"network namespaces unavailable: {exc}")
    try:
        yield net
    finally:
        net.destroy()


class HostWorker(Worker):
    """``tests.services.Worker``'s command line, run in a host's namespace."""

    def __init__(self, net: netns.Network, host: str, env: dict[str, str], queues: str,
                 concurrency: int, beat: bool = False) -> None:
        self.host = host
        self.log = Path(tempfile.mkstemp(prefix=f"ripmap-host-{host}-", suffix=".log")[1])
        node = f"{host}-{time.time_ns()}@%h"
        cmd = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", queues,
               "-P", "threads", "-c", str(concurrency), "-n", node,
               "-l", "INFO", "--without-gossip", "--without-mingle"]
        if beat:
            cmd += ["-B", "-s", str(self.log.with_suffix(".beat"))]
        self.proc = subprocess.Popen([*net.exec_prefix(host), *cmd], env=env, cwd=ROOT,
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


# "[2026-11-26 14:31:12,345: INFO/MainProcess] Task ripmap.reason_episode[<id>] received"
_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): [A-Z]+/[^\]]*\] Task "
                   + re.escape(tasks.REASON_EPISODE) + r"\[([^\]]+)\] (received|succeeded"
                   r"|failed|retry|raised)", re.M)


def events(text: str) -> list[tuple[float, str, str]]:
    """(time, batch id, what) for each episode task line of a worker log."""
    return [(datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f").timestamp(), batch, what)
            for t, batch, what in _LINE.findall(text)]


def in_flight(text: str) -> set[str]:
    """Batches the worker received and has not finished (nor given back for a retry)."""
    held: set[str] = set()
    for _, batch, what in events(text):
        if what == "received":
            held.add(batch)
        else:
            held.discard(batch)
    return held


def received(text: str, since: float = 0.0) -> dict[str, float]:
    """Batch id -> the first time the worker received it at or after ``since``."""
    out: dict[str, float] = {}
    for t, batch, what in events(text):
        if what == "received" and t >= since:
            out.setdefault(batch, t)
    return out


def produce(net: netns.Network, env: dict[str, str], records: list[dict[str, Any]],
            folder: Path) -> set[str]:
    """Enqueue ``records`` with the producer API from the hub's namespace (over TCP, as a
    ranking service would); returns the batch ids it sent."""
    path = folder / f"failures-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(records))
    code = ("import json, sys; from producer.api import Producer; p = Producer(); "
            "r = p.enqueue(json.loads(open(sys.argv[1]).read())); p.close(); "
            "print(json.dumps([e.batch_id for e in r if e.new]))")
    done = subprocess.run([*net.exec_prefix("redis"), sys.executable, "-c", code, str(path)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    ids = set(json.loads(done.stdout.strip().splitlines()[-1]))
    expected = {b.batch_id for b in chunk(validate_failures(records), 5)}
    assert ids == expected
    return ids


def records(count: int, salt: str) -> list[dict[str, Any]]:
    """``count`` batches' worth (five each) of distinct failures, new ones each run."""
    salt = f"{salt} {uuid.uuid4().hex[:8]}"
    return [failure(i, query=f"{salt} query {i}") for i in range(count * 5)]


def test_worker_host_cut_off_mid_episode_loses_and_doubles_nothing(
    network: netns.Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One episode host's link goes down while it reasons and comes back later: nothing
    lost, nothing merged twice, its batches delivered again after the visibility timeout."""
    net = network
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="ripmap-hosts-"))  # short: a unix socket lives here
    sock = folder / "redis.sock"
    server = subprocess.Popen(
        [*net.exec_prefix("redis"), redis_server_binary(), "--port", str(PORT),
         # bound to an address that exists only in the test's namespaces: no protected mode
         "--bind", net.address("redis"), "--protected-mode", "no",
         "--unixsocket", str(sock), "--unixsocketperm", "700",
         "--dir", str(folder), "--save", "", "--appendonly", "no", "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    workers: list[HostWorker] = []
    try:
        _run(net, server, sock, folder, tmp_path, monkeypatch, workers, started)
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.stop(timeout=20)
        server.terminate()
        server.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def _run(net: netns.Network, server: subprocess.Popen[bytes], sock: Path, folder: Path,
         tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: list[HostWorker],
         started: float) -> None:
    url = f"redis://{net.address('redis')}:{PORT}/0"  # what every host uses
    # episodes take up to 2 s; visibility timeout 2 x 3 s (the CLI timeout) + 2 s = 8 s
    env = worker_env(url, RIPMAP_REASONER="claude-cli", PATH=fake_claude(tmp_path / "bin"),
                     FAKE_CLAUDE_DELAY="2", RIPMAP_CLAUDE_CLI_TIMEOUT_SECONDS="3",
                     RIPMAP_LLM_TIMEOUT_SECONDS="1", RIPMAP_LLM_ATTEMPTS="1",
                     RIPMAP_LLM_BACKOFF_MAX_SECONDS="0", RIPMAP_VISIBILITY_MARGIN_SECONDS="2",
                     RIPMAP_LEDGER_CHECK_AFTER_SECONDS="3")
    # the test process reads the same server over its unix socket
    local = f"unix://{sock}"
    observer = settings_for({**env, "RIPMAP_REDIS_URL": f"{local}?db=0",
                             "RIPMAP_BROKER_URL": f"{local}?db=1"}, monkeypatch)
    vt = observer.visibility_timeout
    wait_until(lambda: sock.exists() or server.poll() is not None, 20, "redis-server up")
    assert server.poll() is None, "redis-server exited"
    client = store.connect(observer.state_url)
    wait_until(lambda: _pings(client), 20, "redis-server answers")

    merge = HostWorker(net, "merge", env, tasks.MERGE_QUEUE, concurrency=2, beat=True)
    w1 = HostWorker(net, "w1", env, tasks.EPISODE_QUEUE, concurrency=4)
    w2 = HostWorker(net, "w2", env, tasks.EPISODE_QUEUE, concurrency=4)
    workers += [merge, w1, w2]
    for w in workers:
        w.wait_ready(60)

    # first wave: both episode hosts at work
    run_started = time.time()
    first = produce(net, env, records(FIRST_WAVE, "hosts"), folder)
    sent = set(first)
    wait_until(lambda: sum(store.merged_flags(client, sorted(first))) >= FIRST_WAVE // 4
               and len(in_flight(w1.text())) >= 2, 60,
               "a quarter of the first wave merged and w1 reasoning")

    # pull w1's cable mid-episode
    cut_at = time.time()
    net.link_down("w1")
    held = in_flight(w1.text())  # received and unfinished at the cut: never acknowledged
    assert held and not net.carrier("w1")

    # keep it down until w2 has received every batch w1 held (the visibility timeout, then
    # the sweep of a live worker), and a few seconds more
    def redelivered() -> dict[str, float]:
        got = received(w2.text(), since=cut_at)
        return {b: got[b] for b in held if b in got}

    wait_until(lambda: len(redelivered()) == len(held), vt + 30,
               f"the {len(held)} batches w1 held delivered to w2")
    time.sleep(2)
    again = redelivered()
    w1_got = {b: t for b, t in received(w1.text()).items() if b in held}
    delays = [again[b] - w1_got[b] for b in held]
    restored_at = time.time()
    net.link_up("w1")
    wait_until(lambda: net.carrier("w1"), 10, "w1's link up")

    # second wave after the link came back; more while w1 has taken none, so it has work to
    # take whenever its connections come back (their retransmission timers have backed off)
    sent |= produce(net, env, records(SECOND_WAVE, "hosts after"), folder)
    broker = redis.Redis.from_url(observer.broker)
    deadline = time.monotonic() + 60
    while not received(w1.text(), since=restored_at):
        assert time.monotonic() < deadline, (
            f"w1 took no batch after the link came back:\n{w1.text()[-3000:]}")
        if not broker.llen(tasks.EPISODE_QUEUE):
            sent |= produce(net, env, records(4, "hosts top-up"), folder)
        time.sleep(0.5)
    w1_back = received(w1.text(), since=restored_at)

    # w1's stalled episodes finish once it can reach the store again (their merge changes
    # nothing: w2 merged those batches); then everything settles
    wait_until(lambda: not in_flight(w1.text()) & held, 60, "w1's stalled episodes finished")
    wait_settled(client, observer, sent, timeout=120)
    wait_until(lambda: inbox.count(client) == 0 and broker_idle(observer), 30,
               "the reducer's inbox empty")
    finished_at = time.time()
    late = {b: status for b, status in _statuses(w1.text()).items() if b in held}

    acc = account(client, sent)
    stats = client.hgetall(keys.STATS)
    all_received = [b for w in (w1, w2) for _, b, what in events(w.text()) if what == "received"]
    figures = {
        **acc.figures(),
        "redelivered": len(all_received) - len(sent),
        "hosts": len(HOSTS),
        "held_at_cut": len(held),
        "held_reasoned_twice": sum(status == "reasoned" for status in late.values()),
        "visibility_timeout_s": vt,
        "detect_s": round(min(again.values()) - cut_at, 1),
        "redelivery_delay_min_s": round(min(delays), 1),
        "redelivery_delay_max_s": round(max(delays), 1),
        "partition_s": round(restored_at - cut_at, 1),
        "rejoin_s": round(min(w1_back.values()) - restored_at, 1),
        "resent_by_ledger": ledger.resent_count(client),
        "run_s": round(finished_at - run_started, 1),
        "test_s": round(time.monotonic() - started, 1),
    }
    reliability.record("hosts_partition", **figures)
    print("figures:", json.dumps(figures), "late results on w1:", late)

    acc.assert_exact()  # merged exactly once, never both, aggregates = the episode log
    assert not acc.dead, f"dead-lettered: {acc.dead}"
    assert acc.merged == sent
    assert int(stats.get("episodes", 0)) == len(sent) >= FIRST_WAVE + SECOND_WAVE
    # every batch w1 held at the cut went to w2 after at least the visibility timeout
    # (counted from w1's receipt), and within the sweep interval and a margin of it
    assert min(delays) >= vt - 1, (delays, vt)
    assert max(delays) <= vt + 15, (delays, vt)
    # w1 finished every episode it held once the link was back, merging none of them twice
    assert set(late) == held, (late, held)
    for w in workers:
        assert w.proc.poll() is None, f"{w.host} exited:\n{w.text()[-3000:]}"
    broker.close()
    client.close()


_RESULT = re.compile(re.escape(tasks.REASON_EPISODE)
                     + r"\[([^\]]+)\] succeeded in [0-9.e-]+s: \{'status': '([a-z-]+)'")


def _statuses(text: str) -> dict[str, str]:
    """Batch id -> the status of the worker's last run of its episode task."""
    return dict(_RESULT.findall(text))


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
