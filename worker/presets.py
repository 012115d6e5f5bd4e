"""Presets from measured evaluations: which parameter versions helped on which
repositories, and a condition over repository features saying where each applies.

Every (version, registered repository) pair the closed loop scored is evidence. A
version's **effect** on a repository is its NDCG there minus the repository's baseline
(the defaults where they were evaluated there, else the first version evaluated there).
Presets are chosen by **tuning** effects only; held-out effects are carried as evidence
for the reader and never used to choose.

* **broad**: the version that helped on the most repositories (more helped than hurt,
  then the larger mean tuning effect) — the directions that carry across repositories.
  Its condition spans the features of the repositories it helped on, widened (counts ×/÷
  ``COUNT_FACTOR``, depth ± ``DEPTH_MARGIN``, shares ± ``SHARE_MARGIN``); it names a
  language only when all of them share one dominant language.
* **for-<repo>**: where a repository's own best version beats the broad preset there by
  more than ``MIN_GAIN``: a preset that helped only on some repositories, conditioned on
  those repositories' features (so the ones it hurt on are named in its evidence).
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from dataclasses import dataclass

import redis

from ranker import RepositoryError
from ranker.features import repository_features
from schemas.features import LOG_FEATURES, NumericFeature, RepoFeatures
from schemas.params import ParameterPoint
from schemas.repos import RepoEvaluation
from schemas.settings import Settings
from schemas.wisdom import FeatureRange, Preset, PresetCondition, PresetEvidence
from state import evaluations, presets, versions
from worker.evaluation import repository

MIN_GAIN = 0.001  # a tuning NDCG change below this is neither help nor harm
MAX_MEASURED = 4
COUNT_FACTOR = 4.0
DEPTH_MARGIN = 1.0
SHARE_MARGIN = 0.15
NUMERIC: tuple[NumericFeature, ...] = ("file_count", "mean_depth", "history_commits",
                                       "co_change_density", "vendored_share")


def build(client: redis.Redis, settings: Settings) -> list[Preset]:
    """Presets from every evaluation recorded, with the registered repositories' features."""
    results = evaluations.results(client)
    if not results:
        return []
    features = repo_features(client, settings)
    params: dict[int, ParameterPoint] = {}
    for v in sorted({r.version for r in results}):
        record = versions.get(client, v)
        if record is not None:
            params[v] = record.params
    return presets_from(results, params, features)


def repo_features(client: redis.Redis, settings: Settings) -> dict[str, RepoFeatures]:
    """Each registered repository's features (computed from its index and remembered), plus
    those remembered for repositories that can no longer be opened here."""
    for registered in evaluations.repos(client):
        with contextlib.suppress(RepositoryError, OSError):
            presets.save_features(client, registered.name,
                                  repository_features(repository(registered, settings)))
    return presets.features(client)


@dataclass(frozen=True)
class _Table:
    """Effects of each version on each repository it was evaluated on."""

    results: dict[str, dict[int, RepoEvaluation]]
    baseline: dict[str, int]

    def tuning(self, version: int, repo: str) -> float | None:
        row = self.results[repo].get(version)
        base = self.results[repo][self.baseline[repo]]
        return None if row is None else row.tuning.ndcg - base.tuning.ndcg

    def evaluated_on(self, version: int) -> list[str]:
        return [r for r in sorted(self.results) if version in self.results[r]]

    def helped(self, version: int) -> list[str]:
        return [r for r in self.evaluated_on(version) if (self.tuning(version, r) or 0) > MIN_GAIN]

    def hurt(self, version: int) -> list[str]:
        return [r for r in self.evaluated_on(version)
                if (self.tuning(version, r) or 0) < -MIN_GAIN]

    def mean_gain(self, version: int) -> float:
        gains = [self.tuning(version, r) or 0.0 for r in self.evaluated_on(version)]
        return sum(gains) / len(gains) if gains else 0.0


def presets_from(results: list[RepoEvaluation], params: dict[int, ParameterPoint],
                 features: dict[str, RepoFeatures]) -> list[Preset]:
    """The measured presets (at most ``MAX_MEASURED``), broad first; none without a version
    that helped somewhere on tuning."""
    by_repo: dict[str, dict[int, RepoEvaluation]] = defaultdict(dict)
    for r in results:
        if r.version in params:
            by_repo[r.repo][r.version] = r
    defaults = ParameterPoint()
    baseline = {repo: min((v for v in rows if params[v] == defaults), default=min(rows))
                for repo, rows in by_repo.items()}
    table = _Table(dict(by_repo), baseline)
    candidates = sorted(v for v in params if params[v] != defaults and table.helped(v))
    if not candidates:
        return []
    broad = max(candidates, key=lambda v: (len(table.helped(v)) - len(table.hurt(v)),
                                           table.mean_gain(v), -v))
    chosen: list[tuple[str, int, list[str]]] = []
    if len(table.helped(broad)) * 2 > len(table.evaluated_on(broad)):
        name = "broad" if len(by_repo) > 1 else f"for-{table.helped(broad)[0]}"
        chosen.append((name, broad, table.helped(broad)))
    for repo in sorted(by_repo):
        own = [v for v in candidates if (table.tuning(v, repo) or 0) > MIN_GAIN]
        if not own or len(chosen) >= MAX_MEASURED:
            continue
        best = max(own, key=lambda v: (table.tuning(v, repo) or 0.0, -v))
        if any(params[best] == params[v] for _, v, _ in chosen):
            continue
        if (table.tuning(best, repo) or 0) <= (table.tuning(broad, repo) or 0) + MIN_GAIN:
            continue
        chosen.append((f"for-{repo}", best, table.helped(best)))
    out = []
    for name, version, support in chosen:
        preset = _preset(name, version, params[version], support, table, features)
        if preset is not None:
            out.append(preset)
    return out


def _preset(name: str, version: int, point: ParameterPoint, support: list[str], table: _Table,
            features: dict[str, RepoFeatures]) -> Preset | None:
    known = [features[r] for r in support if r in features]
    if not known:
        return None  # no features where it helped: nothing to condition on
    condition = condition_for(known)
    evidence = [_evidence(table, version, repo, repo in support, features.get(repo))
                for repo in table.evaluated_on(version)]
    learned = ", ".join(f"{e.repo} v{e.version} (tuning {e.tuning_effect:+.4f}, held-out "
                        f"{e.heldout_effect:+.4f})" for e in evidence if e.learned_here)
    hurt = [e.repo for e in evidence if e.tuning_effect < -MIN_GAIN]
    text = (f"repositories where {condition.describe()}: learned on {learned}"
            + (f"; hurt on {', '.join(hurt)}" if hurt else ""))
    return Preset(name=name[:80], params=point, when_to_use=text[:2_000], condition=condition,
                  evidence=evidence)


def _evidence(table: _Table, version: int, repo: str, learned: bool,
              features: RepoFeatures | None) -> PresetEvidence:
    row, base = table.results[repo][version], table.results[repo][table.baseline[repo]]
    return PresetEvidence(
        repo=repo, version=version, baseline_version=base.version, learned_here=learned,
        tuning_effect=round(row.tuning.ndcg - base.tuning.ndcg, 6),
        heldout_effect=round(row.heldout.ndcg - base.heldout.ndcg, 6),
        heldout_ndcg=row.heldout.ndcg, heldout_commits=row.heldout.commits, features=features)


def condition_for(support: list[RepoFeatures]) -> PresetCondition:
    """The features of the repositories a preset helped on, widened: a language clause
    only when they share one dominant language, each numeric range a margin beyond theirs."""
    dominant = {f.dominant_language for f in support if f.dominant_language}
    ranges = [r for feature in NUMERIC
              if (r := _range(feature, [f.value(feature) for f in support])) is not None]
    return PresetCondition(languages=sorted(dominant) if len(dominant) == 1 else [],
                           ranges=ranges)


def _range(feature: NumericFeature, values: list[float]) -> FeatureRange | None:
    lo, hi = min(values), max(values)
    low: float | None
    high: float | None
    if feature in LOG_FEATURES:
        low, high = math.floor(lo / COUNT_FACTOR), math.ceil(hi * COUNT_FACTOR)
        low = low if low > 0 else None
    elif feature == "mean_depth":
        low, high = round(lo - DEPTH_MARGIN, 4), round(hi + DEPTH_MARGIN, 4)
        low = low if low > 0 else None
    else:
        low, high = round(lo - SHARE_MARGIN, 4), round(hi + SHARE_MARGIN, 4)
        low = low if low > 0 else None
        high = high if high < 1 else None
    if low is None and high is None:
        return None
    return FeatureRange(feature=feature, low=low, high=high)
