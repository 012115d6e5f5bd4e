"""Distilled operator wisdom: presets, heuristics, warnings, intuitions."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.episode import Text, Usage
from schemas.features import LOG_FEATURES, Language, NumericFeature, RepoFeatures
from schemas.limits import MAX_REASONING_CHARS
from schemas.params import ParameterPoint

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_strip_whitespace=True)
Name = Annotated[str, StringConstraints(min_length=1, max_length=80)]
MAX_PRESETS = 8
# a repository-specific preset is recommended over the cross-repository one only where
# the repository it was learned on is this near in features (``Preset.distance``): a
# different dominant language alone costs 1.0, so only a same-language near twin
NEAR_MATCH = 0.5


_FILLED_BY_SERVICE = ("Filled in by the service from measured evaluations; leave it empty "
                      "(whatever is given here is discarded).")


class FeatureRange(BaseModel):
    """``low <= feature <= high`` (either side open when None)."""

    model_config = _STRICT

    feature: NumericFeature
    low: float | None = None
    high: float | None = None

    def mismatch(self, features: RepoFeatures) -> str | None:
        """Why ``features`` fall outside the range, or None when inside."""
        value = features.value(self.feature)
        if self.low is not None and value < self.low:
            return f"{self.feature} {value:g} is below {self.low:g}"
        if self.high is not None and value > self.high:
            return f"{self.feature} {value:g} is above {self.high:g}"
        return None

    def describe(self) -> str:
        """``59 <= file_count <= 944``."""
        low = f"{self.low:g} <= " if self.low is not None else ""
        high = f" <= {self.high:g}" if self.high is not None else ""
        return f"{low}{self.feature}{high}"


class PresetCondition(BaseModel):
    """Where a preset applies, over ``RepoFeatures``: every clause must hold."""

    model_config = _STRICT

    # the repository's dominant language is one of these (empty: any language)
    languages: Annotated[list[Language], Field(max_length=20)] = []
    ranges: Annotated[list[FeatureRange], Field(max_length=10)] = []

    def mismatches(self, features: RepoFeatures) -> list[str]:
        """Every clause ``features`` fail, as sentences; empty when the condition holds."""
        found = []
        if self.languages and features.dominant_language not in self.languages:
            found.append(f"dominant language {features.dominant_language or 'none'} is not "
                         f"{' or '.join(self.languages)}")
        found += [m for r in self.ranges if (m := r.mismatch(features)) is not None]
        return found

    def describe(self) -> str:
        """The condition as one line."""
        parts = [f"dominant language in {{{', '.join(self.languages)}}}"] if self.languages else []
        parts += [r.describe() for r in self.ranges]
        return " and ".join(parts) or "any repository"


class PresetEvidence(BaseModel):
    """What a preset's parameters measured on one repository, against that repository's
    baseline version (the defaults where they were evaluated there)."""

    model_config = _STRICT

    repo: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    version: Annotated[int, Field(ge=0)]  # the evaluated version holding these parameters
    baseline_version: Annotated[int, Field(ge=0)]
    learned_here: bool = False  # the preset was chosen from this repository's tuning scores
    tuning_effect: float  # tuning NDCG of the version minus the baseline's
    heldout_effect: float  # held-out NDCG (never used to choose) minus the baseline's
    heldout_ndcg: Annotated[float, Field(ge=0.0, le=1.0)]
    heldout_commits: Annotated[int, Field(ge=0)] = 0
    features: RepoFeatures | None = None
    # measured at distillation (the preset's point scored directly against the defaults,
    # which need not be any version: ``version`` is then the baseline's), with the paired
    # 95 % interval of the tuning effect over the repository's tuning commits
    measured_at_distillation: bool = False
    tuning_low: float | None = None
    tuning_high: float | None = None
    # a leave-one-out transfer measurement (the cross-repository preset): the point scored
    # here was built from these other repositories' bests only, this one's left out
    transfer_from: Annotated[list[str], Field(max_length=50)] = []
    transfer_point: Annotated[str, StringConstraints(max_length=300)] | None = None


class TransferScore(BaseModel):
    """A point built from some training repositories' bests, scored on another training
    repository's tuning cases against the defaults (paired 95 % interval)."""

    model_config = _STRICT

    repo: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    built_from: Annotated[list[str], Field(max_length=50)]
    point: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    gain: float
    low: float
    high: float


class CandidateScore(BaseModel):
    """One candidate of a cross-repository selection: scored on every training repository's
    tuning cases against the defaults, or (with ``transfers``) a construction scored by
    leave-one-out transfer between the training repositories."""

    model_config = _STRICT

    label: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    worst_gain: float  # the smallest tuning gain over the repositories
    mean_gain: float
    kept: bool = True  # eligible (passed the gate, or its worst-case gain is above noise)
    # a construction: the point it makes from all training repositories, and its
    # leave-one-out transfers (one per training repository it could be scored on)
    built: Annotated[str, StringConstraints(max_length=300)] | None = None
    transfers: Annotated[list[TransferScore], Field(max_length=50)] = []


class RobustSelection(BaseModel):
    """How a cross-repository preset was chosen: the candidates, the rule, the pick."""

    model_config = _STRICT

    rule: Annotated[str, StringConstraints(max_length=1_000)]
    repos: Annotated[list[str], Field(max_length=50)]
    chosen: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    candidates: Annotated[list[CandidateScore], Field(max_length=60)] = []
    # the preset's point: the chosen construction built from all training repositories
    built: Annotated[str, StringConstraints(max_length=300)] | None = None


class Preset(BaseModel):
    """A named full configuration and when to use it: prose, and (for presets the service
    measured) a structured condition over repository features with its evidence."""

    model_config = _STRICT

    name: Name
    params: ParameterPoint
    when_to_use: Text
    condition: PresetCondition | None = Field(default=None, description=_FILLED_BY_SERVICE)
    evidence: Annotated[list[PresetEvidence], Field(max_length=50)] = Field(
        default_factory=list, description=_FILLED_BY_SERVICE)
    # set on the cross-repository preset (chosen by its worst-case leave-one-out transfer
    # between the training repositories); None on presets that are one repository's version
    selection: RobustSelection | None = Field(default=None, description=_FILLED_BY_SERVICE)

    @property
    def cross_repository(self) -> bool:
        """Chosen for robustness across repositories rather than learned on some of them:
        a selection backed by evidence measured at distillation (a reasoner's evidence is
        dropped, so a selection a reasoner wrote is inert)."""
        return self.selection is not None and any(e.measured_at_distillation
                                                  for e in self.evidence)

    def expected_effect(self) -> float | None:
        """Mean held-out effect where the preset was learned (None without evidence)."""
        learned = [e.heldout_effect for e in self.evidence if e.learned_here]
        return sum(learned) / len(learned) if learned else None

    def distance(self, features: RepoFeatures) -> float:
        """How far ``features`` are from the nearest repository the preset was learned on
        (counts on a log scale, depth in levels, shares as they are); inf without one."""
        near = [e.features for e in self.evidence if e.learned_here and e.features is not None]
        return min((_distance(f, features) for f in near), default=math.inf)


_NUMERIC: tuple[NumericFeature, ...] = ("file_count", "mean_depth", "history_commits",
                                        "co_change_density", "vendored_share")


def _distance(a: RepoFeatures, b: RepoFeatures) -> float:
    total = 0.0
    for name in _NUMERIC:
        x, y = a.value(name), b.value(name)
        if name in LOG_FEATURES:
            x, y = math.log1p(x), math.log1p(y)
        elif name in ("co_change_density", "vendored_share"):
            x, y = 4 * x, 4 * y  # a quarter of the range weighs like one depth level
        total += (x - y) ** 2
    lang = 0.0 if a.dominant_language == b.dominant_language else 1.0
    return math.sqrt(total + lang)


class Recommendation(BaseModel):
    """The preset chosen for a repository's features, or why none was."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    matched: bool
    preset: Preset | None = None
    reason: str
    features: RepoFeatures
    expected_effect: float | None = None  # mean held-out NDCG change where it was learned
    # every measured preset considered, with the clauses it failed (empty: it matched)
    considered: dict[str, list[str]] = {}
    wisdom_version: int = 0


def recommend(presets: list[Preset], features: RepoFeatures, wisdom_version: int = 0
              ) -> Recommendation | None:
    """The measured preset for ``features``, among those whose condition holds:

    1. a repository-specific preset whose learned-on repository is within ``NEAR_MATCH``
       in features (the nearest such one): a near twin of a repository it was learned on;
    2. else the cross-repository preset (``Preset.selection``: chosen by its worst-case
       leave-one-out transfer between the training repositories, or by an older rule's
       worst-case tuning gain over them), what carries to a repository none was learned
       on;
    3. else the preset learned on the repository nearest in features (then the larger
       expected effect).

    None when there is no measured preset at all (presets without a condition are prose
    from a reasoner and are never recommended)."""
    measured = [p for p in presets if p.condition is not None and p.evidence]
    if not measured:
        return None
    considered = {p.name: p.condition.mismatches(features) for p in measured
                  if p.condition is not None}
    fits = [p for p in measured if not considered[p.name]]
    if not fits:
        why = "; ".join(f"{name}: {', '.join(m)}" for name, m in considered.items())
        return Recommendation(matched=False, reason=f"no preset matches ({why})",
                              features=features, considered=considered,
                              wisdom_version=wisdom_version)

    best, why = _choose(fits, features)
    assert best.condition is not None
    learned = ", ".join(f"{e.repo} v{e.version}" if not e.measured_at_distillation else e.repo
                        for e in best.evidence if e.learned_here)
    reason = f"{best.name} matches ({best.condition.describe()}); learned on {learned}, {why}"
    return Recommendation(matched=True, preset=best, reason=reason, features=features,
                          expected_effect=best.expected_effect(), considered=considered,
                          wisdom_version=wisdom_version)


def _choose(fits: list[Preset], features: RepoFeatures) -> tuple[Preset, str]:
    """``recommend``'s rule among the presets whose condition holds, with its reason."""
    specific = [p for p in fits if not p.cross_repository]
    robust = [p for p in fits if p.cross_repository]
    twins = [p for p in specific if p.distance(features) <= NEAR_MATCH]
    if twins:
        best = _nearest(twins, features)
        return best, (f"the nearest in features at distance {best.distance(features):.2f} "
                      f"(within {NEAR_MATCH:g}: a near twin, preferred to a cross-repository "
                      "preset)")
    if robust:
        return _robust_choice(robust, specific, features)
    best = _nearest(fits, features)
    return best, f"the nearest in features at distance {best.distance(features):.2f}"


def _nearest(options: list[Preset], features: RepoFeatures) -> Preset:
    return min(options, key=lambda p: (p.distance(features), -(p.expected_effect() or 0.0),
                                       p.name))


def _robust_choice(robust: list[Preset], specific: list[Preset], features: RepoFeatures
                   ) -> tuple[Preset, str]:
    best = max(robust, key=lambda p: (_worst_gain(p), p.name))
    others = ""
    if specific:
        near = _nearest(specific, features)
        others = (f"; no repository-specific preset is within {NEAR_MATCH:g} in features "
                  f"(nearest: {near.name} at {near.distance(features):.2f})")
    measure = ("leave-one-out transfer gain between"
               if any(e.transfer_from for e in best.evidence) else "tuning gain over")
    return best, (f"the cross-repository preset (worst-case {measure} the training "
                  f"repositories {_worst_gain(best):+.4f}){others}")


def _worst_gain(preset: Preset) -> float:
    gains = [e.tuning_effect for e in preset.evidence if e.learned_here]
    return min(gains, default=0.0)


class Heuristic(BaseModel):
    """``if CONDITION: ADJUSTMENT "rationale"``."""

    model_config = _STRICT

    condition: Text
    adjustment: Text
    rationale: Annotated[str, StringConstraints(max_length=4_000)] = ""


class WisdomDraft(BaseModel):
    """What a reasoner produces when distilling (no bookkeeping fields)."""

    model_config = _STRICT

    presets: Annotated[list[Preset], Field(max_length=MAX_PRESETS)] = []
    heuristics: Annotated[list[Heuristic], Field(max_length=30)] = []
    warnings: Annotated[list[Text], Field(max_length=30)] = []
    intuitions: Annotated[str, StringConstraints(max_length=MAX_REASONING_CHARS)] = ""


class Wisdom(WisdomDraft):
    """A versioned distillation of the scratchpad."""

    version: Annotated[int, Field(ge=1)]
    created_at: float
    episodes_seen: Annotated[int, Field(ge=0)]
    reasoner: str
    usage: Usage = Field(default_factory=Usage)

    def to_markdown(self) -> str:
        """The seed's "Distilled Operator Wisdom" document."""
        lines = [
            "# Distilled Operator Wisdom",
            "",
            f"Version {self.version}, from {self.episodes_seen} episodes, by {self.reasoner}.",
            "",
            "## Presets",
        ]
        for p in self.presets:
            values = ", ".join(f"{k}: {v:g}" for k, v in p.params.as_floats().items())
            lines.append(f"- **{p.name}**: {{{values}}} \"{p.when_to_use}\"")
            if p.condition is not None:
                lines.append(f"  - applies when: {p.condition.describe()}")
            if p.selection is not None and p.cross_repository:
                built = f" = {p.selection.built}" if p.selection.built else ""
                lines.append(f"  - chosen across {', '.join(p.selection.repos)}: "
                             f"{p.selection.chosen}{built} ({p.selection.rule})")
            for e in p.evidence:
                role = "learned on" if e.learned_here else "measured on"
                what = (f"scored at distillation against v{e.baseline_version}"
                        if e.measured_at_distillation
                        else f"v{e.version} against v{e.baseline_version}")
                if e.transfer_from:
                    what = (f"{e.transfer_point or 'a point'} built from "
                            f"{', '.join(e.transfer_from)} only, {what}")
                lines.append(f"  - {role} {e.repo} ({what}): tuning {e.tuning_effect:+.4f}, "
                             f"held-out {e.heldout_effect:+.4f}")
        lines += ["", "## Adaptive Heuristics"]
        lines += [f"- if {h.condition}: {h.adjustment} \"{h.rationale}\"" for h in self.heuristics]
        lines += ["", "## Warnings"]
        lines += [f"- ⚠ WARNING: {w}" for w in self.warnings]
        lines += ["", "## Intuitions", "", self.intuitions or "_None yet._", ""]
        return "\n".join(lines)
