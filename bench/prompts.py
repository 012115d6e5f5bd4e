"""Benchmark 3: prompt size as history grows.

The reasoning prompt (``system_prompt()`` + ``episode_prompt(build_request(...))``) for a
realistic batch of 5 failures, and the distillation prompt (``distill_prompt`` over
``store.summary``), after 100 and 100,000 merged episodes seeded as in benchmark 2. Sizes
are deterministic, so one seeding suffices; ``build_request`` latency is timed in three
rounds. The ceilings are computed from the settings and the schema's size limits.
"""

from __future__ import annotations

import time

import redis

from bench.common import Options, failure_records, private_redis, settings_for, stat, table
from bench.seeding import Generator, seed
from schemas.failures import FailureBatch, RankingFailure
from schemas.limits import MAX_TEXT_CHARS
from schemas.params import PARAM_NAMES
from schemas.settings import Settings
from state import keys, store
from worker import episodes, prompts
from worker.reasoners.base import EpisodeRequest

ROUNDS, CALLS = 3, 100


def run(opts: Options) -> str:
    """Measure and return the markdown section."""
    sizes = (100, 10_000) if opts.quick else (100, 100_000)
    batch = FailureBatch(failures=[RankingFailure.model_validate(r)
                                   for r in failure_records(5, "prompt")])
    rows = []
    with private_redis() as url:
        client, settings = store.connect(url), settings_for(url)
        gen = Generator(seed=7)
        for size in sizes:
            seed(client, settings, gen, size - int(client.hget(keys.STATS, "episodes") or 0))
            rows.append(_measure(client, settings, batch, size))
        client.close()
    return _report(opts, rows, settings_for("redis://unused:1/0"))


def _measure(client: redis.Redis, settings: Settings, batch: FailureBatch,
             size: int) -> list[object]:
    request = episodes.build_request(episodes.read_context(client, batch, settings), batch)
    system = prompts.system_prompt()
    episode = prompts.episode_prompt(request)
    bare = prompts.episode_prompt(EpisodeRequest(failures=request.failures,
                                                 params=request.params,
                                                 signatures=request.signatures))
    distill = prompts.distill_prompt(store.summary(client, settings.distill_top_k))
    timings = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(CALLS):
            context = episodes.read_context(client, batch, settings)
            prompts.episode_prompt(episodes.build_request(context, batch))
        timings.append((time.perf_counter() - t0) / CALLS * 1000)
    return [f"{size:,}", _size(len(system) + len(episode)), _size(len(system)),
            _size(len(episode) - len(bare)), _size(len(distill)), stat(timings).fmt(2)]


def _size(chars: int) -> str:
    return f"{chars:,} (~{chars // 4:,})"


def _report(opts: Options, rows: list[list[object]], settings: Settings) -> str:
    item = MAX_TEXT_CHARS + 16  # an insight line: "- (NNNx) " + text
    history_cap = 3 * settings.prompt_top_k * item + settings.trajectory_length * 600 + (
        2 * len(PARAM_NAMES) * 80)
    distill_cap = 3 * settings.distill_top_k * item + 2 * len(PARAM_NAMES) * 80 + 2_000
    return "\n\n".join([
        "## 3. Prompt size vs history",
        f"Command: `{opts.command}`",
        "Characters (~tokens = chars / 4). The reasoning prompt is for one realistic batch of "
        "5 failures; its history-dependent part is what the scratchpad contributes "
        "(knowledge, trajectory, pending votes): the rest depends only on the batch. "
        f"`build_request` + `episode_prompt` timed over {ROUNDS} rounds × {CALLS} calls.",
        table(["merged episodes", "reasoning prompt total", "of which static system part",
               "of which history-dependent", "distillation prompt",
               "build + render ms, median (min–max)"], rows),
        f"Bound: the history-dependent part of the reasoning prompt holds at most "
        f"`prompt_top_k` ({settings.prompt_top_k}) insights of each of 3 kinds (each ≤ "
        f"{MAX_TEXT_CHARS:,} chars by the schema), `trajectory_length` "
        f"({settings.trajectory_length}) version lines and one pending line per "
        f"parameter-direction: ≤ ~{history_cap:,} chars (~{history_cap // 4:,} tokens) "
        f"however long the history; the distillation prompt holds `distill_top_k` "
        f"({settings.distill_top_k}) insights per kind and one line per parameter-direction: "
        f"≤ ~{distill_cap:,} chars (~{distill_cap // 4:,} tokens). Realistic insights are "
        "one sentence, so the measured sizes sit far below the ceilings and stop growing "
        "once the top-k lists are full.",
    ])
