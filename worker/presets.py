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
  for what carries to a repository none was learned on, by **measured transfer between
  the training repositories**. A *construction* is a source (``best``: the best of the
  repositories' best versions by their own tuning gain; ``consensus``: per parameter the
  mean of ``log(best / default)`` over their bests, zero where the signs disagree) and a
  **shrink** toward the defaults in log space (1, or ``SHRINK``: 0.75, 0.5, 0.25 of the
  move kept). Each construction is scored by leave-one-out within the training
  repositories: for each one T it is built from the others' bests only and scored on T's
  **tuning** cases against the defaults (paired 95 % interval over T's tuning commits);
  with two repositories that is A→B and B→A. (In-sample gain cannot choose: the bests were
  found on those same tuning cases, so it always prefers the unshrunk extremes.) The
  construction with the largest **worst-case** transfer gain wins (then the larger mean,
  then the final point nearer to the defaults), provided that worst case is above
  ``MIN_GAIN``; the preset is that construction built from **all** training
  repositories. Its evidence is the leave-one-out transfer per repository (tuning gain
  with interval; the held-out effect is measured beside it for the reader, never to
  choose); ``selection`` lists every construction's transfers. ``schemas.wisdom.recommend``
  prefers it to the others unless one of those was learned on a near twin of the
  repository (``NEAR_MATCH``).
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
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
    TransferScore,
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
RULE = ("largest worst-case leave-one-out transfer gain between the training repositories: "
        "for each one, the construction built from the others' best versions only and "
        "scored on its tuning cases against the defaults (then the larger mean gain, then the "
        "nearer to the defaults); the preset is that construction built from all of them")


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
class Best:
    """A repository's best evaluated version and its own tuning gain over the repository's
    baseline (the defaults where they were evaluated there)."""

    repo: str
    version: int
    point: ParameterPoint
    gain: float

    @property
    def label(self) -> str:
        return f"{self.repo} v{self.version}"


@dataclass(frozen=True)
class Construction:
    """How a robust point is made from some repositories' bests: the **source** (``best``:
    the best whose own tuning gain is largest; ``consensus``: their consensus), then
    **shrunk** toward the defaults by ``factor`` (1 keeps the source point)."""

    source: str
    factor: float

    @property
    def label(self) -> str:
        return f"{self.source} ×{self.factor:g}"

    def build(self, bests: Sequence[Best]) -> Candidate:
        """The point this construction makes from ``bests`` (one or more)."""
        ordered = sorted(bests, key=lambda b: b.repo)
        if self.source == "best" or len(ordered) == 1:
            top = max(ordered, key=lambda b: b.gain)  # the first of equals, by name
            base = Candidate(top.label, top.point)
        else:
            base = Candidate("consensus of " + ", ".join(b.label for b in ordered),
                             consensus([b.point for b in ordered]))
        if self.factor == 1.0:
            return base
        return Candidate(f"{base.label} ×{self.factor:g}", shrink(base.point, self.factor))


CONSTRUCTIONS = tuple(Construction(source, factor) for source in ("best", "consensus")
                      for factor in (1.0, *SHRINK))


@dataclass(frozen=True)
class Transfer:
    """A construction built from every training repository but ``repo``, scored on
    ``repo``'s tuning cases against the defaults (paired 95 % interval over its commits)."""

    repo: str
    built_from: tuple[str, ...]
    candidate: Candidate
    gain: float
    low: float
    high: float


@dataclass(frozen=True)
class CrossScored:
    """A construction's leave-one-out transfer between the training repositories, and the
    point it makes from all of them."""

    construction: Construction
    transfers: tuple[Transfer, ...]
    final: Candidate

    @property
    def worst(self) -> float:
        return min(t.gain for t in self.transfers)

    @property
    def mean(self) -> float:
        return sum(t.gain for t in self.transfers) / len(self.transfers)

    @property
    def size(self) -> float:
        """How far the final point is from the defaults (sum of absolute log moves)."""
        return sum(abs(v) for v in moves_of(self.final.point).values())


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


def best_versions(results: list[RepoEvaluation], params: Mapping[int, ParameterPoint],
                  repos: list[str]) -> dict[str, Best]:
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
        gain = rows[v].tuning.ndcg - base.tuning.ndcg
        if params[v] != defaults and gain > MIN_GAIN:
            out[repo] = Best(repo, v, params[v], gain)
    return out


def cross_transfer(bests: Mapping[str, Best], repos: Mapping[str, Repository]
                   ) -> list[CrossScored]:
    """Every construction of ``CONSTRUCTIONS``, scored by leave-one-out **between** the
    training repositories ``repos``: for each one T, the construction built from the bests
    of the others (T's own best left out), scored on T's tuning cases against the defaults.
    A T none of the others has a best for is skipped; a construction with no T is left out.
    Only ``repos`` are evaluated."""
    per_case: dict[tuple[str, ParameterPoint], Evaluation] = {}

    def evaluate(name: str, point: ParameterPoint) -> Evaluation:
        if (name, point) not in per_case:
            per_case[(name, point)] = repos[name].evaluate(point, "tuning")
        return per_case[(name, point)]

    out = []
    everyone = [bests[n] for n in sorted(bests)]
    for construction in CONSTRUCTIONS:
        transfers = []
        for name, repo in sorted(repos.items()):
            others = [b for b in everyone if b.repo != name]
            if not others:
                continue
            candidate = construction.build(others)
            gain, low, high = paired_interval(evaluate(name, candidate.point).per_case,
                                              evaluate(name, ParameterPoint()).per_case, repo,
                                              "tuning")
            transfers.append(Transfer(name, tuple(b.repo for b in others), candidate, gain,
                                      low, high))
        if transfers and everyone:
            out.append(CrossScored(construction, tuple(transfers), construction.build(everyone)))
    return out


def select(scored: list[CrossScored]) -> CrossScored | None:
    """The construction with the largest **worst-case** leave-one-out transfer gain (then the
    larger mean, then the final point nearer to the defaults: with two training
    repositories ``best`` and ``consensus`` are scored on the same points, and the smaller
    move is taken); None unless that worst case is above ``MIN_GAIN`` (nothing built from
    some training repositories helped every other one)."""
    if not scored:
        return None
    chosen = max(scored, key=lambda s: (s.worst, s.mean, -s.size))
    return chosen if chosen.worst > MIN_GAIN else None


def robust_from(results: list[RepoEvaluation], params: Mapping[int, ParameterPoint],
                repos: Mapping[str, Repository], features: Mapping[str, RepoFeatures]
                ) -> Preset | None:
    """The robust cross-repository preset over ``repos`` (the registered ones that open
    here, with evaluations): None with fewer than two, or when no construction transfers
    between them."""
    evaluated = {r.repo for r in results}
    training = {n: r for n, r in sorted(repos.items()) if n in evaluated and n in features}
    if len(training) < 2:
        return None
    bests = best_versions(results, params, sorted(training))
    scored = cross_transfer(bests, training)
    chosen = select(scored)
    if chosen is None:
        return None
    defaults = ParameterPoint()
    baseline = {r.repo: r.version for r in results if params.get(r.version) == defaults}
    evidence = []
    for t in chosen.transfers:
        repo = training[t.repo]
        heldout = repo.evaluate(t.candidate.point, "heldout")  # for the reader only
        base_heldout = repo.evaluate(defaults, "heldout")
        b = baseline.get(t.repo, 0)
        evidence.append(PresetEvidence(
            repo=t.repo, version=b, baseline_version=b, learned_here=True,
            tuning_effect=round(t.gain, 6),
            heldout_effect=round(heldout.ndcg - base_heldout.ndcg, 6),
            heldout_ndcg=min(1.0, max(0.0, round(heldout.ndcg, 6))),
            heldout_commits=heldout.commits, features=features[t.repo],
            measured_at_distillation=True, tuning_low=round(t.low, 6),
            tuning_high=round(t.high, 6), transfer_from=list(t.built_from),
            transfer_point=t.candidate.label[:300]))
    condition = condition_for([features[n] for n in training])
    figures = ", ".join(f"{t.repo} from {'+'.join(t.built_from)} {t.gain:+.4f} "
                        f"[{t.low:+.4f}, {t.high:+.4f}]" for t in chosen.transfers)
    text = (f"repositories where {condition.describe()}: {chosen.final.label}, made as "
            f"'{chosen.construction.label}', the largest worst-case leave-one-out transfer "
            f"between the training repositories of {len(scored)} constructions; built "
            f"without each and scored on its tuning cases: {figures}")
    selection = RobustSelection(
        rule=RULE, repos=sorted(training), chosen=chosen.construction.label,
        built=chosen.final.label[:300],
        candidates=[CandidateScore(
            label=s.construction.label, worst_gain=round(s.worst, 6),
            mean_gain=round(s.mean, 6), kept=s.worst > MIN_GAIN, built=s.final.label[:300],
            transfers=[TransferScore(repo=t.repo, built_from=list(t.built_from),
                                     point=t.candidate.label[:300], gain=round(t.gain, 6),
                                     low=round(t.low, 6), high=round(t.high, 6))
                       for t in s.transfers[:50]])
            for s in scored[:60]])
    return Preset(name=ROBUST, params=chosen.final.point, when_to_use=text[:2_000],
                  condition=condition, evidence=evidence, selection=selection)
