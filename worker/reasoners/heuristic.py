"""An offline, deterministic, rule-based analyst: evaluated versions and failure
signatures -> proposals.

When recent versions carry a tuning NDCG (``EpisodeRequest.history``), it reasons from
that evidence like a careful analyst doing a coordinate-wise pattern search around the
best version it can see: a move that raised NDCG is continued (momentum), one that
lowered it is undone and later tried the other way, one with no measurable effect is
dropped, and otherwise the next parameter not yet tried is probed, in the order the
signature rules rank plausible, then the rest. Every step moves one parameter by a
large (x2) factor, so its effect can be read off the next evaluation. The plan depends
only on the shared history and version, never on the batch, so concurrent episodes on
one version vote alike (consensus averages votes: opposing ones would cancel); the
batch's signatures only add confidence and explanation. Without evaluations it falls back
to voting over the rules that the batch's failure signatures trigger.

It needs no network and no key, so the embedded default and the tests run anywhere;
its answers say plainly that they come from rules, not from a language model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from schemas.episode import Direction, Magnitude, ProposedChange, ReasonerAnswer
from schemas.params import PARAM_SPECS, ParameterPoint
from schemas.scratchpad import ScratchpadSummary
from schemas.wisdom import Heuristic, Preset, WisdomDraft
from state import stepping
from state.consensus import LOG_STEP
from worker import signatures as sig
from worker.reasoners.base import DistillReply, EpisodeRequest, ReasonerReply, VersionEvidence

Rule = list[tuple[str, Direction, Magnitude, str]]
INC, DEC = Direction.INCREASE, Direction.DECREASE
SMALL, MEDIUM, LARGE = Magnitude.SMALL, Magnitude.MEDIUM, Magnitude.LARGE

_NAMES = list(sig.DETECTORS)
# Audited in bench/headtohead.py (each rule's change alone from the seed-rule walk's
# current point, on tuning cases; bench/headtohead_results.md has the tables): rules whose
# steps hurt more often than they helped were dropped, the two that clearly help take
# large steps. Dropped: co-located expected files -> boost_focus_expansion up (helped 6,
# hurt 60) and focus_decay up (32 / 51): focus expansion follows references, not
# directories, so co-location is a structural gap (see _structural), not a tuning one;
# expected files deeper -> depth_weight_deep up (5 / 9; retargeted to
# depth_weight_moderate up it did no better, 22 / 36): the ranker's depth classes are
# coarse (root <= 2 slashes), so "one level deeper" rarely changes a file's class;
# query terms missed -> boost_mentioned_ident up (25 / 23, then 11 / 49 from the points
# the large steps reach) and boost_mentioned_file up (29 / 28, 34 / 29, 34 / 36: a coin
# flip, mean -0.00005): whether more boost helps depends on where one is; a path-token
# feature is the structural fix (see _structural). Inert on the audited corpora but kept
# (no evidence either way): the root-crowding, vendor and seed rules.
RULES: dict[str, Rule] = {
    _NAMES[0]: [("depth_weight_root", DEC, MEDIUM, "root-level files outrank the nested ones"),
                ("depth_weight_moderate", INC, SMALL, "lift mid-depth files over root noise")],
    _NAMES[1]: [("depth_weight_vendor", DEC, LARGE, "vendored files should never reach the top")],
    _NAMES[2]: [("boost_chat_file", DEC, SMALL, "the seed's own boost drowns its neighbours"),
                ("pagerank_chat_multiplier", DEC, SMALL, "less personalisation mass on the seed")],
    _NAMES[6]: [("pagerank_alpha", DEC, LARGE, "more personalisation toward the seed's context")],
    _NAMES[7]: [("boost_temporal_coupling", INC, LARGE, "bug fixes touch files that co-change")],
}
KNOWN_INTERACTIONS = {
    ("pagerank_alpha", "boost_chat_file"): "low pagerank_alpha with a high boost_chat_file "
    "gives tunnel vision: personalisation and the chat boost both concentrate on the seed",
    ("pagerank_alpha", "depth_weight_deep"): "low depth_weight_deep with low pagerank_alpha "
    "penalises nested code twice",
    ("boost_temporal_coupling", "git_recency_max_boost"): "temporal coupling and git recency "
    "are redundant in young repositories",
    ("focus_decay", "focus_max_hops"): "extreme focus_decay with a large focus_max_hops "
    "creates blind spots beyond the first hop",
}


class HeuristicReasoner:
    """Maps failure signatures and the evaluated trajectory to proposals with rationales
    and a confidence (the module docstring says how)."""

    name = "heuristic"

    def reason(self, request: EpisodeRequest) -> ReasonerReply:
        """Follow the evidence when versions were evaluated, else vote over the rules."""
        n = len(request.failures)
        plan = _plan(request)
        if plan is not None:
            changes, confidence, evidence = plan
            diagnosis = _diagnosis(request.signatures, n) + " " + evidence
        else:
            changes, support = _vote(request.signatures)
            confidence = round(min(0.9, 0.3 + 0.5 * support / n), 3) if changes else 0.2
            diagnosis = _diagnosis(request.signatures, n)
        answer = ReasonerAnswer(
            diagnosis=diagnosis,
            param_interactions=_interactions(changes),
            proposed_changes=changes,
            structural_insights=_structural(request.signatures, n),
            confidence=confidence,
        )
        return ReasonerReply(raw=answer.diagnosis, answer=answer)

    def distill(self, summary: ScratchpadSummary) -> DistillReply:
        """Presets, heuristics and warnings straight from the aggregates."""
        draft = WisdomDraft(
            presets=_presets(summary),
            heuristics=[Heuristic(condition=i.text, adjustment=_rule_text(i.text),
                                  rationale=f"seen in {i.count} episodes (rule-based)")
                        for i in summary.signatures if i.text in RULES][:10],
            warnings=[i.text for i in summary.interactions[:5]]
            or [KNOWN_INTERACTIONS[("pagerank_alpha", "boost_chat_file")]],
            intuitions=_intuitions(summary),
        )
        return DistillReply(raw=draft.intuitions, draft=draft)


def _vote(signatures: dict[str, int]) -> tuple[list[ProposedChange], int]:
    score: dict[str, float] = {}
    why: dict[str, tuple[Magnitude, str]] = {}
    for name, count in signatures.items():
        for param, direction, magnitude, rationale in RULES.get(name, []):
            score[param] = score.get(param, 0.0) + (count if direction is INC else -count)
            why.setdefault(param, (magnitude, f"{rationale} ({name}, {count}×)"))
    changes = [ProposedChange(param=p, direction=INC if s > 0 else DEC, magnitude=why[p][0],
                              rationale=f"rule-based: {why[p][1]}")
               for p, s in sorted(score.items()) if s != 0]
    return changes, int(max((abs(s) for s in score.values()), default=0))


def _diagnosis(signatures: dict[str, int], n: int) -> str:
    if not signatures:
        return f"Rule-based analysis of {n} failure(s): no known failure pattern matched."
    found = "; ".join(f"{name} ({count}/{n})" for name, count in signatures.items())
    return f"Rule-based analysis (no language model) of {n} failure(s): {found}."


def _interactions(changes: list[ProposedChange]) -> list[str]:
    moved = {c.param for c in changes}
    return [text for pair, text in KNOWN_INTERACTIONS.items() if moved & set(pair)]


def _structural(signatures: dict[str, int], n: int) -> list[str]:
    out = []
    if signatures.get(_NAMES[3], 0):
        out.append("query terms that match expected paths are not a ranking signal of their "
                   "own; a path-token match feature would catch them without boost tuning")
    if signatures.get(_NAMES[4], 0) * 2 > n:
        out.append("most expected files share the seed's directory: focus expansion follows "
                   "references, not directories; a same-directory feature would rank them "
                   "without boost tuning")
    if signatures.get(_NAMES[6], 0) * 2 > n:
        out.append("most failures share nothing with the expected set: tuning weights cannot "
                   "recover files the candidate generation never reaches")
    return out


def _rule_text(name: str) -> str:
    return ", ".join(f"{d.value} {p} {m.value}" for p, d, m, _ in RULES[name])


def _presets(summary: ScratchpadSummary) -> list[Preset]:
    learned = summary.params
    tuned = [ProposedChange(param=c.param, direction=Direction(c.direction),
                            magnitude=SMALL) for c in summary.changes[:4]]
    defaults = ParameterPoint()
    return [
        Preset(name="default", params=defaults,
               when_to_use="a new repository with no ranking history yet"),
        Preset(name="learned", params=learned,
               when_to_use="repositories like those the failures came from"),
        Preset(name="learned-plus", params=stepping.apply(learned, stepping.first_per_param(tuned)),
               when_to_use="when the learned preset still misses: one more small step "
               "along the most frequent proposals"),
    ]


def _intuitions(summary: ScratchpadSummary) -> str:
    if summary.episodes == 0:
        return "No episodes merged yet: nothing to distill."
    moved = [f"{c.param} ({c.direction} ×{c.count})" for c in summary.changes[:5]]
    patterns = [f"{i.text} ({i.count}×)" for i in summary.signatures[:3]]
    drift = [f"{p} {v:g} (default {PARAM_SPECS[p].default:g})"
             for p, v in summary.params.as_floats().items() if v != PARAM_SPECS[p].default]
    return (
        f"Rule-based distillation of {summary.episodes} episodes. "
        f"The failures most often show: {'; '.join(patterns) or 'no recurring pattern'}. "
        f"The changes proposed most often: {', '.join(moved) or 'none'}. "
        f"Parameters that moved from their defaults: {', '.join(drift) or 'none'}."
    )


# ---------------------------------------------------------------- reasoning from evidence

# |Δ tuning NDCG| at or below this: the move had no measurable effect (0.1 NDCG points).
FLAT = 0.001
# The exploration order: parameters the rules name, most plausible first (by how often
# their signatures occur and how their steps fared in the rule audit of
# bench/headtohead.py, on tuning cases), then the ones no rule names.
PRIOR_ORDER: tuple[str, ...] = (
    "pagerank_alpha", "boost_temporal_coupling", "depth_weight_root", "depth_weight_moderate",
    "pagerank_chat_multiplier", "depth_weight_vendor", "boost_chat_file",
)
ORDER: tuple[str, ...] = PRIOR_ORDER + tuple(p for p in PARAM_SPECS if p not in PRIOR_ORDER)


def _prior() -> dict[str, tuple[Direction, str, str]]:
    """Parameter -> (direction, rationale, signature) of the rule that names it."""
    out: dict[str, tuple[Direction, str, str]] = {}
    for name, rule in RULES.items():
        for param, direction, _, rationale in rule:
            out.setdefault(param, (direction, rationale, name))
    return out


PRIOR = _prior()


@dataclass(frozen=True)
class Probe:
    """An evaluated version read as one move from the best version evaluated before it."""

    version: int
    ref: int
    move: dict[str, float]  # parameter -> log factor from ref to version
    delta: float            # tuning NDCG of version minus ref's

    @property
    def outcome(self) -> str:
        return "helped" if self.delta > FLAT else "hurt" if self.delta < -FLAT else "flat"

    def text(self) -> str:
        moved = ", ".join(f"{p} x{math.exp(x):.2f}" for p, x in sorted(self.move.items()))
        return f"v{self.version} ({moved} from v{self.ref}) {self.outcome}: {self.delta:+.4f}"


@dataclass(frozen=True)
class Reading:
    """What the history says: positions, probes, the anchor (best) and the current."""

    current: VersionEvidence
    anchor: VersionEvidence
    positions: dict[int, dict[str, float]]
    probes: list[Probe]

    def records(self, param: str) -> list[tuple[float, str, int]]:
        """(sign, outcome, version) of every probe that moved ``param``, oldest first."""
        return [(math.copysign(1.0, p.move[param]), p.outcome, p.version)
                for p in self.probes if param in p.move]


def read_history(history: list[VersionEvidence]) -> Reading | None:
    """Positions (log factors from the last reset) along the chain of consensus steps,
    probes, and the best evaluated version since the last rollback, manual set or the
    oldest version seen; None when nothing since then was evaluated."""
    rows = sorted(history, key=lambda e: e.version)
    if not rows:
        return None
    positions: dict[int, dict[str, float]] = {}
    root: dict[int, int] = {}
    previous: VersionEvidence | None = None
    for row in rows:
        if (previous is not None and row.reason == "consensus"
                and row.parent == previous.version):
            here = dict(positions[previous.version])
            for name, factor in row.factors.items():
                if name in PARAM_SPECS and factor > 0:
                    here[name] = here.get(name, 0.0) + math.log(factor)
            positions[row.version] = {k: v for k, v in here.items() if abs(v) > 1e-9}
            root[row.version] = root[previous.version]
        else:
            positions[row.version], root[row.version] = {}, row.version
        previous = row
    probes = []
    for row in rows:
        earlier = [u for u in rows if u.version < row.version and u.ndcg is not None
                   and root[u.version] == root[row.version]]
        if row.ndcg is None or not earlier:
            continue
        ref = max(earlier, key=lambda u: (u.ndcg or 0.0, u.version))
        move = _difference(positions[row.version], positions[ref.version])
        if move:
            probes.append(Probe(row.version, ref.version, move, row.ndcg - (ref.ndcg or 0.0)))
    current = rows[-1]
    scored = [u for u in rows if u.ndcg is not None and root[u.version] == root[current.version]]
    if not scored:
        return None
    anchor = max(scored, key=lambda u: (u.ndcg or 0.0, u.version))
    return Reading(current, anchor, positions, probes)


def _difference(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """a - b in log space, without residuals below half a small step (what is left when
    a clamped step was undone by the nearest magnitude): those are no move."""
    out = {p: a.get(p, 0.0) - b.get(p, 0.0) for p in sorted(set(a) | set(b))}
    return {p: x for p, x in out.items() if abs(x) >= LOG_STEP[SMALL] / 2}


def _sign_direction(x: float) -> Direction:
    return INC if x > 0 else DEC


def _nearest(log_factor: float) -> Magnitude | None:
    """The step magnitude closest to a log factor (None below half a small step)."""
    size = abs(log_factor)
    if size < LOG_STEP[SMALL] / 2:
        return None
    return min(LOG_STEP, key=lambda m: abs(LOG_STEP[m] - min(size, LOG_STEP[LARGE])))


def _fitting(params: dict[str, float], param: str, direction: Direction,
             largest: Magnitude = LARGE) -> Magnitude | None:
    """The largest magnitude (up to ``largest``) whose whole step stays inside the
    parameter's safe range, so it is never clamped and can be undone exactly."""
    spec, value = PARAM_SPECS[param], params[param]
    sign = 1.0 if direction is INC else -1.0
    for magnitude in (LARGE, MEDIUM, SMALL):
        if LOG_STEP[magnitude] > LOG_STEP[largest]:
            continue
        new = value * math.exp(sign * LOG_STEP[magnitude])
        if spec.floor * (1 - 1e-9) <= new <= spec.ceiling * (1 + 1e-9):
            return magnitude
    return None


def _supported(signatures: dict[str, int], param: str, direction: Direction) -> str | None:
    """The batch's signature whose rule proposes this move, if any."""
    for name in sorted(signatures, key=lambda n: (-signatures[n], n)):
        for p, d, _, _ in RULES.get(name, []):
            if p == param and d is direction:
                return name
    return None


def _frontier(reading: Reading) -> int:
    """Where exploration resumes in ORDER: after the parameter most recently probed for
    the first time in the history seen; with no probes, rotated by the version number."""
    seen: set[str] = set()
    first: list[str] = []
    for probe in reading.probes:
        fresh = [p for p in ORDER if p in probe.move and p not in seen]
        seen.update(probe.move)
        if fresh:
            first = fresh
    if first:
        return (ORDER.index(first[0]) + 1) % len(ORDER)
    return reading.current.version % len(ORDER)


def _plan(request: EpisodeRequest) -> tuple[list[ProposedChange], float, str] | None:
    """The evidence-driven proposal, its confidence and a sentence on the evidence; None
    when no version since the last reset was evaluated (then the rules vote)."""
    reading = read_history(request.history)
    if reading is None:
        return None
    params = request.params.as_floats()
    current, anchor = reading.current, reading.anchor
    seen = "; ".join(p.text() for p in reading.probes[-4:]) or "no step evaluated yet"
    evidence = (f"Trajectory evidence: {seen}. Best evaluated: v{anchor.version} "
                f"(NDCG {anchor.ndcg:.4f}).")
    last = reading.probes[-1] if reading.probes else None

    # momentum: the current version is the best and its move raised NDCG
    if (last is not None and last.version == current.version == anchor.version
            and last.outcome == "helped"):
        keep = []
        for p, x in last.move.items():
            magnitude = _fitting(params, p, _sign_direction(x))
            if magnitude is not None:
                keep.append(ProposedChange(
                    param=p, direction=_sign_direction(x), magnitude=magnitude,
                    rationale=f"rule-based (trajectory): {p} {_sign_direction(x).value} "
                    f"raised tuning NDCG by {last.delta:+.4f} (v{last.ref} -> "
                    f"v{last.version}); keep going"))
        if keep:
            confidence = round(min(0.9, 0.6 + 10 * last.delta), 3)
            return keep, confidence, evidence + " Plan: continue the move that helped."

    changes: list[ProposedChange] = []
    if current.ndcg is None:
        # in flight: the moves since the best are not evaluated yet; leave them be
        busy = set(_difference(reading.positions[current.version],
                               reading.positions[anchor.version]))
        note = f" v{current.version} is not evaluated yet: its move stands until it is."
    else:
        back = _difference(reading.positions[anchor.version],
                           reading.positions[current.version])
        busy = set(back)
        why = (f"lowered tuning NDCG by {last.delta:+.4f}" if last is not None
               and last.version == current.version and last.outcome == "hurt"
               else "had no measurable effect or was not the best")
        for p, x in back.items():
            magnitude = _nearest(x)
            if magnitude is not None:
                changes.append(ProposedChange(
                    param=p, direction=_sign_direction(x), magnitude=magnitude,
                    rationale=f"rule-based (trajectory): back to best v{anchor.version}; "
                    f"the move at v{current.version} {why}"))
        note = f" Back to v{anchor.version} on {', '.join(sorted(back))}." if back else ""

    probe = _next_probe(reading, params, busy, request.signatures)
    if probe is not None:
        change, confidence = probe
        changes.append(change)
    elif not changes:
        return None
    else:
        confidence = 0.5
    if current.ndcg is None:
        confidence = min(confidence, 0.35)
    return changes, round(confidence, 3), evidence + note + (
        f" Plan: {changes[-1].direction.value} {changes[-1].param}." if probe else "")


def _next_probe(reading: Reading, params: dict[str, float], busy: set[str],
                signatures: dict[str, int]) -> tuple[ProposedChange, float] | None:
    """The other side of a move that hurt, else the next parameter not yet tried."""
    # reversals: every probe of the parameter went one way and none helped
    for probe in reversed(reading.probes):
        for p in sorted(probe.move):
            records = reading.records(p)
            sign = records[-1][0]
            if (p in busy or records[-1][1] != "hurt"
                    or any(s != sign or o == "helped" for s, o, _ in records)):
                continue
            direction = _sign_direction(-sign)
            magnitude = _fitting(params, p, direction)
            if magnitude is not None:
                return ProposedChange(
                    param=p, direction=direction, magnitude=magnitude,
                    rationale=f"rule-based (trajectory): {_sign_direction(sign).value} "
                    f"{p} lowered tuning NDCG at v{records[-1][2]}; try the other side"), 0.55
    start = _frontier(reading)
    for k in range(len(ORDER)):
        p = ORDER[(start + k) % len(ORDER)]
        if p in busy or reading.records(p):
            continue  # being undone, or tried in the history seen (helped, hurt or flat)
        prior = PRIOR.get(p)
        direction = prior[0] if prior else INC
        magnitude = _fitting(params, p, direction)
        if magnitude is None:
            direction = DEC if direction is INC else INC
            magnitude = _fitting(params, p, direction)
            if magnitude is None:
                continue
        support = _supported(signatures, p, direction)
        why = (f"the rules' prior: {prior[1]} ({prior[2]})" if prior and prior[0] is direction
               else "no rule names it; untried")
        confidence = 0.45 if prior else 0.4
        if support:
            confidence += 0.1
            why += f"; this batch shows it ({support})"
        return ProposedChange(param=p, direction=direction, magnitude=magnitude,
                              rationale=f"rule-based (trajectory): {p} not tried in the "
                              f"recent versions; {why}"), confidence
    return None
