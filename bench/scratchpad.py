"""Benchmark 2: merge latency and Redis memory as the scratchpad grows.

The scratchpad is seeded through ``worker.reducer.merge`` itself with realistic, diverse
episodes (``bench.seeding``). At each size, three rounds of timed merges give p50 and p99
of one ``reducer.merge`` call (delta, JSON, the EVALSHA round trip, and the consensus step
when a merge completes a quorum). The smallest size is re-seeded from empty for every
round, so its rounds all start at that size. Memory is INFO ``used_memory`` above the
empty server's, broken down by key family with MEMORY USAGE.
"""

from __future__ import annotations

import re
from collections import Counter

import redis

from bench.common import Options, loadavg, percentile, private_redis, settings_for, stat, table
from bench.seeding import Generator, seed, timed_merges
from schemas.settings import Settings
from state import keys, store

ROUNDS = 3
FAMILIES = [  # (label, pattern over key names), first match wins
    ("merged-episode markers", re.compile(r"^ripmap:merged:")),
    ("episode log", re.compile(r"^ripmap:episodes$")),
    ("insight sets (3 kinds, zset + text hash)", re.compile(r"^ripmap:insights:")),
    ("parameter versions (records, briefs, evidence)",
     re.compile(r"^ripmap:(params:v:|versions:brief$|evals$|scores$)")),
    ("everything else", re.compile(r"")),
]


def run(opts: Options) -> str:
    """Measure and return the markdown section."""
    sizes = (100, 10_000) if opts.quick else (100, 10_000, 100_000)
    per_round = 200 if opts.quick else 300
    load_before = loadavg()
    with private_redis() as url:
        client, settings = store.connect(url), settings_for(url)
        empty = int(client.info("memory")["used_memory"])
        rows = []
        small = sizes[0]
        p50s, p99s = [], []
        for r in range(ROUNDS):
            client.flushdb()
            gen = Generator(seed=r + 1)
            seed(client, settings, gen, small)
            if r == 0:
                memory = _memory(client, empty)
            lat = timed_merges(client, settings, gen, per_round)
            p50s.append(percentile(lat, 50) * 1000)
            p99s.append(percentile(lat, 99) * 1000)
        rows.append(_row(small, p50s, p99s, memory))
        base_p50 = stat(p50s).median
        client.flushdb()
        gen = Generator(seed=99)
        for size in sizes[1:]:
            seed(client, settings, gen, size - int(client.hget(keys.STATS, "episodes") or 0))
            memory = _memory(client, empty)
            p50s, p99s = [], []
            for _ in range(ROUNDS):
                lat = timed_merges(client, settings, gen, per_round)
                p50s.append(percentile(lat, 50) * 1000)
                p99s.append(percentile(lat, 99) * 1000)
            rows.append(_row(size, p50s, p99s, memory))
        ratio = stat(p50s).median / base_p50
        bound = _bound(client, settings)
        client.close()
    return _report(opts, rows, sizes, per_round, ratio, bound, load_before)


def _row(size: int, p50s: list[float], p99s: list[float],
         memory: tuple[int, Counter[str], Counter[str]]) -> list[object]:
    used, by_family, counts = memory
    families = "; ".join(f"{label}: {by_family[label] / 2**20:.1f} MiB ({counts[label]:,} keys)"
                         for label, _ in FAMILIES if counts[label])
    return [f"{size:,}", stat(p50s).fmt(3), stat(p99s).fmt(3), f"{used / 2**20:.1f}", families]


def _memory(client: redis.Redis, empty: int) -> tuple[int, Counter[str], Counter[str]]:
    """Used memory above the empty server's, and MEMORY USAGE summed per key family."""
    by_family: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    batch: list[str] = []

    def flush() -> None:
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key, samples=0)
        for key, size in zip(batch, pipe.execute(), strict=True):
            label = next(lbl for lbl, pattern in FAMILIES if pattern.search(key))
            by_family[label] += int(size or 0)
            counts[label] += 1
        batch.clear()

    for key in client.scan_iter(count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            flush()
    flush()
    return int(client.info("memory")["used_memory"]) - empty, by_family, counts


def _bound(client: redis.Redis, settings: Settings) -> str:
    """The retention-bounded part of the state, from measured per-item sizes."""
    log_len = client.llen(keys.EPISODE_LOG)
    per_episode = _usage(client, keys.EPISODE_LOG) / max(log_len, 1)
    per_insight, insight_items = 0.0, 0
    for kind in keys.INSIGHT_KINDS:
        insight_items += client.zcard(keys.insights(kind))
        per_insight += _usage(client, keys.insights(kind)) + _usage(client,
                                                                    keys.insight_text(kind))
    per_insight /= max(insight_items, 1)
    cap_items = 3 * (settings.insight_retention + settings.insight_retention // 10)
    per_marker = _sampled(client, "ripmap:merged:*")
    versions = sum(1 for _ in client.scan_iter(match="ripmap:params:v:*", count=1000))
    per_version = _sampled(client, "ripmap:params:v:*") + sum(
        _usage(client, k) for k in (keys.VERSION_BRIEFS, keys.EVALS, keys.SCORES)) / max(
        versions, 1)
    kept = settings.version_retention + 1  # the retained ones, and the best
    bounded = (settings.episode_log_retention * per_episode + cap_items * per_insight
               + kept * per_version)
    return (
        f"Retention-bounded part: episode log ≤ `episode_log_retention` "
        f"({settings.episode_log_retention:,}) × {per_episode / 1024:.1f} KiB per episode + "
        f"insight sets ≤ 3 kinds × 1.1 × `insight_retention` ({settings.insight_retention:,}) "
        f"× {per_insight:.0f} B per insight + parameter versions ≤ `version_retention` + the "
        f"best ({kept:,}) × {per_version / 1024:.1f} KiB per version (record, brief, "
        f"evidence; {versions:,} held now) ≈ **{bounded / 2**20:.1f} MiB**, whatever the "
        f"history. Not bounded by retention: one merged-episode marker per episode for "
        f"`dedupe_ttl_seconds` ({settings.dedupe_ttl_seconds / 86_400:.0f} days) at "
        f"{per_marker:.0f} B each (the producer's batch markers add as many again), i.e. "
        f"≈ {per_marker * settings.dedupe_ttl_seconds / 2**20:,.0f} MiB per sustained "
        f"episode/s, bounded by rate × TTL."
    )


def _usage(client: redis.Redis, key: str) -> int:
    return int(client.memory_usage(key, samples=0) or 0)


def _sampled(client: redis.Redis, pattern: str, n: int = 200) -> float:
    """Mean MEMORY USAGE of up to ``n`` keys matching ``pattern``."""
    found = [k for _, k in zip(range(n), client.scan_iter(match=pattern, count=1000),
                               strict=False)]
    return sum(_usage(client, k) for k in found) / max(len(found), 1)


def _report(opts: Options, rows: list[list[object]], sizes: tuple[int, ...], per_round: int,
            ratio: float, bound: str, load_before: str) -> str:
    return "\n\n".join([
        "## 2. Cost vs scratchpad size: merge latency and Redis memory",
        f"Command: `{opts.command}`",
        f"Seeded through `worker.reducer.merge` with realistic episodes (`bench/seeding.py`: "
        f"~4 KB JSON each, 1–3 interactions and 0–2 structural insights per episode, half of "
        f"them novel sentences, detector signatures, 1–3 proposals voting on the current "
        f"version). Latency: {ROUNDS} rounds × {per_round} timed `reducer.merge` calls at "
        f"each size, in this process against a private redis-server (median of the rounds' "
        f"percentiles, min–max). Load average before: {load_before}, after: {loadavg()}.",
        table(["merged episodes", "merge p50 ms", "merge p99 ms",
               "used_memory above empty, MiB", "by key family (MEMORY USAGE)"], rows),
        f"p50 at {sizes[-1]:,} ÷ p50 at {sizes[0]:,}: **{ratio:.2f}** "
        f"(target ≤ 1.25{'; the full run measures 100,000' if opts.quick else ''}).",
        bound,
    ])
