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
* **robust** (with two or more registered repositories that can be opened here): chosen
  for what carries to a repository none was learned on. Candidates: each repository's
  best evaluated version; the **consensus** of those bests (per parameter the mean of
  ``log(best / default)`` over the repositories, zero where their signs disagree); and
  each of these **shrunk** toward the defaults in log space (``SHRINK``: 0.25, 0.5,
  0.75 of the way). Every candidate is scored at distillation on every registered
  repository's **tuning** cases against the defaults (paired 95 % interval over tuning
  commits); a candidate is **kept** where that interval's lower bound is >= 0 on most
  repositories (more than half), and the kept one with the largest **worst-case** tuning
  gain over the repositories is the preset (then the larger mean gain, then the nearer to
  the defaults), provided that worst case is above ``MIN_GAIN``. Its evidence is the
  measured tuning gain per repository; the held-out gain is measured beside it for the
  reader, never to choose. ``schemas.wisdom.recommend`` prefers it to the others unless
  one of those was learned on a near twin of the repository (``NEAR_MATCH``).
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import redis

from ranker import Evaluation, Repository, RepositoryError, paired_interval
from ranker.features import repository_features
from schemas.features import LOG_FEATURES, NumericFeature, RepoFeatures
from schemas.params import PARAM_SPECS, ParameterPoint
from schemas.repos import RepoEvaluation
from schemas.settings import Settings
from schemas.wisdom import (
    CandidateScore,
    FeatureRange,
    Preset,
    PresetCondition,
    PresetEvidence,
    RobustSelection,
)
from state import evaluations, presets, versions
from worker.evaluation import repository

MIN_GAIN = 0.001  # a tuning NDCG change below this is neither help nor harm
MAX_MEASURED = 4
COUNT_FACTOR = 4.0
DEPTH_MARGIN = 1.0
SHARE_MARGIN = 0.15
NUMERIC: tuple[NumericFeature, ...] = ("file_count", "mean_depth", "history_commits",
                                       "co_change_density", "vendored_share")
SHRINK = (0.75, 0.5, 0.25)  # fractions of a candidate's log-space move kept
ROBUST = "robust"
RULE = ("largest worst-case tuning gain over the training repositories, among candidates "
        "whose paired 95 % tuning interval's lower bound is >= 0 on most of them")


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
    measured = presets_from(results, params, features)
    robust = robust_from(results, params, registered_repositories(client, settings), features)
    return ([robust] if robust is not None else []) + measured


def registered_repositories(client: redis.Redis, settings: Settings) -> dict[str, Repository]:
    """The registered repositories that can be opened here (their cached index), by name."""
    opened: dict[str, Repository] = {}
    for registered in evaluations.repos(client):
        with contextlib.suppress(RepositoryError, OSError):
            opened[registered.name] = repository(registered, settings)
    return opened


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


# ---------------------------------------------------------------- the robust preset


@dataclass(frozen=True)
class Candidate:
    """A point proposed for the robust preset, and where it came from."""

    label: str
    point: ParameterPoint


@dataclass(frozen=True)
class Scored:
    """A candidate's tuning gain over the defaults on each training repository, with the
    paired 95 % interval's lower bound."""

    candidate: Candidate
    gains: dict[str, float]
    lows: dict[str, float]

    @property
    def worst(self) -> float:
        return min(self.gains.values())

    @property
    def mean(self) -> float:
        return sum(self.gains.values()) / len(self.gains)

    @property
    def kept(self) -> bool:
        """The gate: the lower bound is >= 0 on more than half of the repositories."""
        return sum(low >= 0 for low in self.lows.values()) * 2 > len(self.lows)


def _log_move(name: str, value: float) -> float:
    spec = PARAM_SPECS[name]
    return math.log(max(value, spec.floor) / spec.default)


def _from_moves(moves: Mapping[str, float]) -> ParameterPoint:
    """The defaults moved by ``moves`` (log factors), clamped into each parameter's safe
    range (``ParamSpec.clamp``: inside the valid bounds)."""
    values = {name: spec.clamp(spec.default * math.exp(moves.get(name, 0.0)))
              for name, spec in PARAM_SPECS.items()}
    return ParameterPoint(**values)


def moves_of(point: ParameterPoint) -> dict[str, float]:
    """``log(value / default)`` per parameter (a value of 0 counts as its safe floor)."""
    return {name: _log_move(name, value) for name, value in point.as_floats().items()}


def shrink(point: ParameterPoint, factor: float) -> ParameterPoint:
    """``point`` moved back toward the defaults in log space: ``factor`` of each
    parameter's log move kept (1 keeps the point, 0 gives the defaults)."""
    return _from_moves({k: factor * v for k, v in moves_of(point).items()})


def consensus(points: list[ParameterPoint]) -> ParameterPoint:
    """Per parameter the mean log move of ``points`` from the defaults, zero where some
    move up and others down (a parameter one leaves alone only dilutes the others)."""
    moves = [moves_of(p) for p in points]
    agreed: dict[str, float] = {}
    for name in PARAM_SPECS:
        values = [m[name] for m in moves]
        if any(v > 1e-9 for v in values) and any(v < -1e-9 for v in values):
            continue
        agreed[name] = sum(values) / len(values)
    return _from_moves(agreed)


def candidates(bests: Mapping[str, tuple[int, ParameterPoint]]) -> list[Candidate]:
    """Each repository's best version, their consensus (two or more repositories), and
    each of these shrunk by ``SHRINK``; no duplicates, never the defaults."""
    bases = [Candidate(f"{repo} v{v}", point) for repo, (v, point) in sorted(bests.items())]
    if len(bests) > 1:
        bases.append(Candidate("consensus of " + ", ".join(
            f"{repo} v{v}" for repo, (v, _) in sorted(bests.items())),
            consensus([p for _, p in bests.values()])))
    out: list[Candidate] = []
    seen = {ParameterPoint()}
    for base in bases:
        for factor in (1.0, *SHRINK):
            point = base.point if factor == 1.0 else shrink(base.point, factor)
            if point in seen:
                continue
            seen.add(point)
            out.append(Candidate(base.label if factor == 1.0 else f"{base.label} ×{factor:g}",
                                 point))
    return out


def score(options: list[Candidate], repos: Mapping[str, Repository]) -> list[Scored]:
    """Each candidate's tuning gain over the defaults on each repository (tuning cases
    only), with the paired bootstrap interval's lower bound."""
    defaults = {name: repo.evaluate(ParameterPoint(), "tuning") for name, repo in repos.items()}
    out = []
    for c in options:
        gains, lows = {}, {}
        for name, repo in sorted(repos.items()):
            ev = repo.evaluate(c.point, "tuning")
            gain, low, _ = paired_interval(ev.per_case, defaults[name].per_case, repo, "tuning")
            gains[name], lows[name] = gain, low
        out.append(Scored(c, gains, lows))
    return out


def select(scored: list[Scored]) -> Scored | None:
    """The kept candidate with the largest worst-case tuning gain (then the larger mean
    gain, then the nearer to the defaults in log space); None unless that worst case is
    above ``MIN_GAIN`` (no candidate helps every repository)."""
    kept = [s for s in scored if s.kept]
    if not kept:
        return None

    def size(s: Scored) -> float:
        return sum(abs(v) for v in moves_of(s.candidate.point).values())

    best = max(kept, key=lambda s: (s.worst, s.mean, -size(s)))
    return best if best.worst > MIN_GAIN else None


def best_versions(results: list[RepoEvaluation], params: Mapping[int, ParameterPoint],
                  repos: list[str]) -> dict[str, tuple[int, ParameterPoint]]:
    """Each repository's best evaluated version by its tuning NDCG, where it beat the
    defaults (or the repository's first evaluated version) by more than ``MIN_GAIN``."""
    defaults = ParameterPoint()
    out = {}
    for repo in repos:
        rows = {r.version: r for r in results if r.repo == repo and r.version in params}
        if not rows:
            continue
        base = rows[min((v for v in rows if params[v] == defaults), default=min(rows))]
        v = max(rows, key=lambda v: (rows[v].tuning.ndcg, -v))
        if params[v] != defaults and rows[v].tuning.ndcg - base.tuning.ndcg > MIN_GAIN:
            out[repo] = (v, params[v])
    return out


def robust_from(results: list[RepoEvaluation], params: Mapping[int, ParameterPoint],
                repos: Mapping[str, Repository], features: Mapping[str, RepoFeatures]
                ) -> Preset | None:
    """The robust cross-repository preset over ``repos`` (the registered ones that open
    here, with evaluations): None with fewer than two, or when no candidate helps all."""
    evaluated = {r.repo for r in results}
    training = {n: r for n, r in sorted(repos.items()) if n in evaluated and n in features}
    if len(training) < 2:
        return None
    bests = best_versions(results, params, sorted(training))
    if not bests:
        return None
    scored = score(candidates(bests), training)
    chosen = select(scored)
    if chosen is None:
        return None
    defaults = ParameterPoint()
    baseline = {r.repo: r.version for r in results if params.get(r.version) == defaults}
    evidence = []
    for name, repo in training.items():
        heldout = repo.evaluate(chosen.candidate.point, "heldout")  # for the reader only
        base_heldout: Evaluation = repo.evaluate(defaults, "heldout")
        _, low, high = paired_interval(repo.evaluate(chosen.candidate.point, "tuning").per_case,
                                       repo.evaluate(defaults, "tuning").per_case, repo,
                                       "tuning")
        b = baseline.get(name, 0)
        evidence.append(PresetEvidence(
            repo=name, version=b, baseline_version=b, learned_here=True,
            tuning_effect=round(chosen.gains[name], 6),
            heldout_effect=round(heldout.ndcg - base_heldout.ndcg, 6),
            heldout_ndcg=min(1.0, max(0.0, round(heldout.ndcg, 6))),
            heldout_commits=heldout.commits, features=features[name],
            measured_at_distillation=True, tuning_low=round(low, 6), tuning_high=round(high, 6)))
    condition = condition_for([features[n] for n in training])
    gains = ", ".join(f"{e.repo} {e.tuning_effect:+.4f}" for e in evidence)
    text = (f"repositories where {condition.describe()}: {chosen.candidate.label}, the "
            f"{RULE} ({len(scored)} candidates); tuning gain {gains}")
    selection = RobustSelection(
        rule=RULE, repos=sorted(training), chosen=chosen.candidate.label[:300],
        candidates=[CandidateScore(label=s.candidate.label[:300], worst_gain=round(s.worst, 6),
                                   mean_gain=round(s.mean, 6), kept=s.kept)
                    for s in scored[:60]])
    return Preset(name=ROBUST, params=chosen.candidate.point, when_to_use=text[:2_000],
                  condition=condition, evidence=evidence, selection=selection)
