"""An offline, deterministic, rule-based analyst: failure signatures -> proposals.

It needs no network and no key, so the embedded default and the tests run anywhere;
its answers say plainly that they come from rules, not from a language model.
"""

from __future__ import annotations

from schemas.episode import Direction, Magnitude, ProposedChange, ReasonerAnswer
from schemas.params import PARAM_SPECS, ParameterPoint
from schemas.scratchpad import ScratchpadSummary
from schemas.wisdom import Heuristic, Preset, WisdomDraft
from state import stepping
from worker import signatures as sig
from worker.reasoners.base import DistillReply, EpisodeRequest, ReasonerReply

Rule = list[tuple[str, Direction, Magnitude, str]]
INC, DEC = Direction.INCREASE, Direction.DECREASE
SMALL, MEDIUM, LARGE = Magnitude.SMALL, Magnitude.MEDIUM, Magnitude.LARGE

_NAMES = list(sig.DETECTORS)
RULES: dict[str, Rule] = {
    _NAMES[0]: [("depth_weight_root", DEC, MEDIUM, "root-level files outrank the nested ones"),
                ("depth_weight_moderate", INC, SMALL, "lift mid-depth files over root noise")],
    _NAMES[1]: [("depth_weight_vendor", DEC, LARGE, "vendored files should never reach the top")],
    _NAMES[2]: [("boost_chat_file", DEC, SMALL, "the seed's own boost drowns its neighbours"),
                ("pagerank_chat_multiplier", DEC, SMALL, "less personalisation mass on the seed")],
    _NAMES[3]: [("boost_mentioned_ident", INC, MEDIUM, "query terms name the expected files"),
                ("boost_mentioned_file", INC, SMALL, "paths matching the query deserve more")],
    _NAMES[4]: [("boost_focus_expansion", INC, MEDIUM, "expected files neighbour the seed"),
                ("focus_decay", INC, SMALL, "keep more weight one hop from the seed")],
    _NAMES[5]: [("depth_weight_deep", INC, MEDIUM, "deep files are under-weighted")],
    _NAMES[6]: [("pagerank_alpha", DEC, SMALL, "more personalisation toward the seed's context")],
    _NAMES[7]: [("boost_temporal_coupling", INC, SMALL, "bug fixes touch files that co-change")],
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
    """Maps failure signatures to proposals with rationales and a confidence."""

    name = "heuristic"

    def reason(self, request: EpisodeRequest) -> ReasonerReply:
        """Vote over the rules that the batch's signatures trigger."""
        n = len(request.failures)
        changes, support = _vote(request.signatures)
        answer = ReasonerAnswer(
            diagnosis=_diagnosis(request.signatures, n),
            param_interactions=_interactions(changes),
            proposed_changes=changes,
            structural_insights=_structural(request.signatures, n),
            confidence=round(min(0.9, 0.3 + 0.5 * support / n), 3) if changes else 0.2,
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
