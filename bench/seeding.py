"""Realistic merged episodes, seeded straight through the reducer's own ``merge``.

What an LLM writes is diverse: most interactions and structural insights recur in a
handful of wordings (a Zipf-like head), many are stated once (a long tail of novel
sentences). The generator mixes both, so the insight sets grow to their retention caps
and the reducer's trimming runs, as it would in production. Failure signatures come from
the real detectors over realistic failures; proposals vote on the current version, so
consensus steps (and new parameter versions) happen at the production rate.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import redis

from bench.common import failure_records
from schemas.episode import Direction, Magnitude, ProposedChange, ReasonerAnswer, ReasoningEpisode
from schemas.failures import FailureBatch, RankingFailure
from schemas.params import PARAM_NAMES, ParameterPoint
from schemas.settings import Settings
from state import versions
from worker import reducer, signatures

COMMON_INTERACTIONS = [
    f"{a} interacts with {b}: raising one {verb} the effect of the other"
    for a, b in zip(PARAM_NAMES, PARAM_NAMES[3:] + PARAM_NAMES[:3], strict=True)
    for verb in ("amplifies", "masks", "cancels")
]
COMMON_STRUCTURAL = [
    "query terms that match expected paths are not a ranking signal of their own",
    "tuning weights cannot recover files the candidate generation never reaches",
    "co-change history is missing for files renamed in the last release",
    "test files that mirror source paths should be linked to their sources",
    "generated code under build directories competes with hand-written files",
    "monorepo packages need per-package personalisation, not a global one",
]
_VOCABULARY = """ranking boost depth vendor seed focus decay personalisation graph edge commit
co-change module package test fixture config entry point import cycle symbol identifier query
term path nested root shallow deep tunnel vision dilution"""
WORDS = tuple(_VOCABULARY.split())
REASONING_CHARS = 2_000  # a typical model answer's length


@dataclass
class Generator:
    """Deterministic stream of realistic episodes."""

    seed: int = 1

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.failures = [RankingFailure.model_validate(r) for r in failure_records(200, "seed")]
        self.count = 0
        self.templates = [self._template() for _ in range(300)]

    def episode(self, params_version: int) -> ReasoningEpisode:
        """The next episode, reasoned against ``params_version``."""
        rng, i = self.rng, self.count
        self.count += 1
        template = self.templates[i % len(self.templates)]
        # model_copy skips validation: the template was validated, and the new insight
        # texts are well within the limits
        answer = template.answer.model_copy(update={
            "param_interactions": [self._insight(COMMON_INTERACTIONS, 0.5)
                                   for _ in range(rng.randint(1, 3))],
            "structural_insights": [self._insight(COMMON_STRUCTURAL, 0.6)
                                    for _ in range(rng.randint(0, 2))],
        })
        now = time.time()
        return template.model_copy(update={
            "episode_id": f"bench-{self.seed}-{i}", "batch_id": f"bench-{self.seed}-{i}",
            "params_version": params_version, "answer": answer,
            "started_at": now - 20, "finished_at": now,
        })

    def _template(self) -> ReasoningEpisode:
        rng = self.rng
        batch = FailureBatch(failures=rng.sample(self.failures, 5))
        changes = [ProposedChange(param=p, direction=rng.choice(list(Direction)),
                                  magnitude=rng.choice(list(Magnitude)),
                                  rationale=self._sentence(12))
                   for p in rng.sample(PARAM_NAMES, rng.randint(1, 3))]
        answer = ReasonerAnswer(diagnosis=self._sentence(40), proposed_changes=changes,
                                confidence=round(rng.uniform(0.2, 0.9), 2))
        return ReasoningEpisode(
            episode_id="template", batch_id="template", repo=batch.repo,
            params=ParameterPoint(), reasoning=(self._sentence(400) * 2)[:REASONING_CHARS],
            answer=answer,
            failure_signatures=list(signatures.batch_signatures(list(batch.failures))),
            reasoner="bench", started_at=0.0, finished_at=0.0, failure_count=5,
            mean_ndcg=sum(f.ndcg for f in batch.failures) / 5,
        )

    def _insight(self, common: list[str], p_common: float) -> str:
        if self.rng.random() < p_common:  # a Zipf-like head of recurring wordings
            return common[min(int(self.rng.paretovariate(1.2)) - 1, len(common) - 1)]
        return f"{self._sentence(18)} (case {self.rng.randrange(10**9)})"  # the novel tail

    def _sentence(self, words: int) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(words))


def seed(client: redis.Redis, settings: Settings, gen: Generator, n: int) -> None:
    """Merge ``n`` more episodes, each voting on the version current when it is built."""
    for _ in range(n):
        reducer.merge(client, gen.episode(versions.current_number(client)), settings)


def timed_merges(client: redis.Redis, settings: Settings, gen: Generator, n: int) -> list[float]:
    """Merge ``n`` more episodes; the seconds each ``reducer.merge`` call took."""
    out = []
    for _ in range(n):
        episode = gen.episode(versions.current_number(client))
        t0 = time.perf_counter()
        reducer.merge(client, episode, settings)
        out.append(time.perf_counter() - t0)
    return out
