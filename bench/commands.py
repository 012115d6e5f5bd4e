"""Benchmark 4: Redis work per episode, split producer / episode task / merge task.

Each phase runs alone, from INFO commandstats deltas (CONFIG RESETSTAT before it):
enqueue with no worker running; then a worker consuming only ``episodes`` until every
episode waits in the reducer's inbox; then a worker consuming only ``merge`` until all are
merged (by the drain the first episode sent). Each
phase runs twice, with a small and a large number of episodes, and the difference is
divided by the difference in episodes, so fixed costs (connecting, worker start-up and
shutdown, readiness pings) cancel. A ``redis-cli monitor`` alongside tells which calls ran
inside Lua scripts (commandstats counts those too): the rest are what clients sent.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import redis

from bench.common import (
    BenchWorker,
    Options,
    env_for,
    failure_records,
    private_redis,
    running,
    settings_for,
    state_client,
    table,
    wait_count,
)
from producer.api import Producer
from schemas.tasks import EPISODE_QUEUE, MERGE_QUEUE
from state import keys
from tests.services import broker_url

PHASES = ("producer", "episode task", "merge task")
MONITOR_LINE = re.compile(r'^\d+\.\d+ \[(\d+) ([^\]]+)\] "([^"]+)"')
ORIGINS = ("state: sent", "state: in Lua", "broker + events")
IGNORED = {"config|resetstat", "config", "info", "monitor", "flushall"}


# commandstats calls, calls inside Lua, calls by origin, state-database calls clients sent
Counts = tuple[Counter[str], Counter[str], Counter[str], Counter[str]]


def run(opts: Options) -> str:
    """Measure and return the markdown section."""
    small, large = (20, 120) if opts.quick else (50, 400)
    with private_redis() as url:
        counts = {n: _phases(url, n) for n in (small, large)}
    per_episode = {phase: tuple(_per_episode(counts[small][phase][i], counts[large][phase][i],
                                             large - small) for i in range(4))
                   for phase in PHASES}
    return _report(opts, per_episode, small, large)


def _per_episode(small: Counter[str], large: Counter[str], episodes: int) -> Counter[str]:
    return Counter({k: (large[k] - small[k]) / episodes for k in large | small})


def _phases(url: str, n: int) -> dict[str, Counts]:
    """Counts per phase for ``n`` episodes."""
    admin = state_client(url)
    admin.flushall()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    broker = redis.Redis.from_url(broker_url(url))
    out = {}
    with _Monitor(port) as monitor:
        producer = Producer(settings_for(url))
        monitor.mark(admin)
        producer.enqueue(failure_records(5 * n, f"cmd{n}"))
        producer.close()
        out["producer"] = monitor.mark(admin)

        polls = Counter[str]()

        def queued() -> int:  # episodes reasoned, waiting in the reducer's inbox
            polls["hlen"] += 1
            return int(admin.hlen(keys.INBOX))

        def merged() -> int:
            polls["hget"] += 1
            return int(admin.hget(keys.STATS, "episodes") or 0)

        for phase, queue, done in (("episode task", EPISODE_QUEUE, queued),
                                   ("merge task", MERGE_QUEUE, merged)):
            polls.clear()
            worker = BenchWorker(env_for(url), queues=queue, concurrency=8, name="commands")
            with running(worker):
                wait_count(done, n, f"{phase}s", worker.check)
            calls, lua, origins, sent = monitor.mark(admin)
            calls.subtract(polls)  # our own polling is not the service's work
            origins.subtract({ORIGINS[0]: polls["hlen"] + polls["hget"]})
            sent.subtract({"hget": polls["hget"], "hlen": polls["hlen"]})
            out[phase] = (calls, lua, origins, sent)
    broker.close()
    admin.close()
    return out


class _Monitor:
    """``redis-cli monitor`` into a file; ``mark`` returns commandstats and Lua-internal
    call counts since the previous mark, and resets the stats."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.path = Path(tempfile.mkstemp(prefix="ripmap-bench-monitor-")[1])
        self.offset = 0

    def __enter__(self) -> _Monitor:
        self.proc = subprocess.Popen(["redis-cli", "-p", str(self.port), "monitor"],
                                     stdout=self.path.open("wb"), stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.path.unlink(missing_ok=True)

    def mark(self, admin: redis.Redis) -> Counts:
        calls = Counter({name.removeprefix("cmdstat_"): int(v["calls"])
                         for name, v in admin.info("commandstats").items()})
        admin.config_resetstat()
        time.sleep(0.5)  # let the monitor stream catch up
        text = self.path.read_bytes()[self.offset:]
        self.offset += len(text)
        lua, origins, sent = Counter[str](), Counter[str](), Counter[str]()
        for line in text.decode(errors="replace").splitlines():
            m = MONITOR_LINE.match(line)
            if not m or m.group(3).lower() in IGNORED:
                continue
            if m.group(2) == "lua":
                lua[m.group(3).lower()] += 1
            elif m.group(1) == "0":
                sent[m.group(3).lower()] += 1
            origins[ORIGINS[0 if m.group(2) != "lua" else 1] if m.group(1) == "0"
                    else ORIGINS[2]] += 1
        for name in IGNORED:
            calls.pop(name, None)
        return calls, lua, origins, sent


def _report(opts: Options, per_episode: dict[str, tuple[Counter[str], ...]], small: int,
            large: int) -> str:
    def shown(v: float) -> bool:
        return abs(v) >= 0.05  # below that: start-up and idle noise left by the difference

    names = sorted({c for p in PHASES for c, v in per_episode[p][0].items() if shown(v)},
                   key=lambda c: -sum(per_episode[p][0][c] for p in PHASES))
    rows = []
    for cmd in names:
        cells = []
        for phase in PHASES:
            total, lua = per_episode[phase][0][cmd], per_episode[phase][1][_base(cmd)]
            cells.append("" if not shown(total) else
                         f"{total:.2f}" + (f" ({lua:.2f} in Lua)" if shown(lua) else ""))
        rows.append([f"`{cmd}`", *cells])
    rows.append(["**all commands**", *[f"**{sum(per_episode[p][0].values()):.1f}**"
                                       for p in PHASES]])
    split = [[origin, *[f"{per_episode[p][2][origin]:.1f}" for p in PHASES]]
             for origin in ORIGINS]
    merge_sent = ", ".join(f"{cmd.upper()} {v:.2f}" for cmd, v in
                           sorted(per_episode["merge task"][3].items(), key=lambda kv: -kv[1])
                           if shown(v))
    episode_sent = ", ".join(f"{cmd.upper()} {v:.2f}" for cmd, v in
                             sorted(per_episode["episode task"][3].items(),
                                    key=lambda kv: -kv[1]) if shown(v))
    return "\n\n".join([
        "## 4. Redis work per episode",
        f"Command: `{opts.command}`",
        f"Commands per episode from INFO commandstats deltas, each phase alone, run with "
        f"{small} and {large} episodes: (calls at {large} − calls at {small}) ÷ "
        f"{large - small}, so connection set-up, worker start-up and readiness pings cancel "
        f"out (what remains below 0.05 is noise and is left out). Commandstats also counts "
        f"commands run inside Lua scripts; a `redis-cli monitor` alongside tells those "
        f"apart, and tells the state database (0) from the broker's (1: kombu's "
        f"LPUSH/BRPOP, its unacked bookkeeping in MULTI/EXEC, and Celery's task events as "
        f"PUBLISH).",
        table(["command", *PHASES], rows),
        "Where the commands come from, per episode (from the monitor):",
        table(["origin", *PHASES], split),
        f"State-database commands the merge side sends per episode: {merge_sent}. The "
        f"reducer (`reducer.merge`) is one EVALSHA per episode: one round trip, plus the "
        f"consensus step's reads and compare-and-set when a vote completes a quorum; the "
        f"drain reads the inbox 100 episodes per HRANDFIELD and renews its flag per chunk. "
        f"State-database commands the episode task sends per episode: {episode_sent} (its "
        f"reads in one script, and the inbox put in another).",
    ])


def _base(cmd: str) -> str:
    return cmd.split("|", 1)[0]
