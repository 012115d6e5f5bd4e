"""Transfer: leave one repository out. Presets learned on some corpora, recommended for the
one left out before its first evaluation, against the defaults, a warm-started ``tune``,
and TPE / random search from the defaults.

``python -m bench.transfer [--corpora DIR] [--seeds 5] [--learn 15] [--jointly]
[--out FILE]`` prints (and with ``--out`` writes) a Markdown section; ``run(...)`` returns
it. Progress: stderr.

For each corpus R of flask, fd, commander.js and each seed:

* **learn** on the other two, **each separately**, in-process against a private
  redis-server with the service's own functions (as ``bench.headtohead`` runs its loop):
  per training corpus a fresh service state with it alone registered, from the defaults;
  every version is scored on it (tuning and held-out, recorded as the evaluation worker
  does: ``evaluations.finish`` and ``versions.record_evaluation`` with the tuning NDCG, so
  best and rollback follow its tuning cases); up to 40 of the version's failing **tuning**
  cases go to heuristic episodes, merged until a consensus step makes the next version
  (``versions.tick(force=True)`` when none does), for ``--learn`` evaluated versions. Then
  one fresh state holds both corpora's evaluations (each evaluated version made a version
  with ``set_manual``, its evaluation recorded on its own corpus only) with both
  registered, and ``worker.distill.measured_presets`` builds the presets
  (``worker.presets``). So a corpus's best was never shaped by the other's failures or
  scores, and the ``robust`` preset's leave-one-out transfer between them is out-of-sample.
  ``--jointly`` adds a diagnostic with the old protocol (seed 0): one service with both
  registered, every version evaluated on both and shaped by their pooled failures and
  tuning NDCG, then a distillation.
* (a) **defaults**; (b) **recommended**: the preset ``schemas.wisdom.recommend`` picks for
  R's features (the defaults when none matches), zero evaluations on R; (c) **warm tune**:
  a fresh service on R alone, the recommended preset made current (``set_manual``), the
  same loop for 5 and 10 evaluations on R's tuning cases, the pick being the best by
  tuning NDCG; (d) **TPE** and **random** (``bench.headtohead``'s) from the defaults, 10
  and 20 evaluations.

For the reader, seed 0's ``robust``-preset constructions are listed with their
leave-one-out transfer between the two training corpora (built from one corpus's best,
scored on the other's tuning cases: what chose) and the held-out effect on R of the point
each makes from both (measured afterwards, never used to choose); each seed's chosen
construction is named.

Held-out NDCG is R's held-out commits only. Intervals: ``ranker.paired_interval`` after
pooling seeds (each method's per-case held-out NDCG averaged over the seeds' picks).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis

from bench.common import clone_bundle, private_redis, scratch
from bench.headtohead import CORPORA_DIR, SAMPLE, Scorer, Trace, run_random, run_tpe
from producer.api import chunk
from ranker import Repository, open_repository, paired_interval
from ranker.features import repository_features
from schemas.features import RepoFeatures
from schemas.params import ParameterPoint
from schemas.repos import RegisteredRepo, RepoEvaluation
from schemas.settings import Settings
from schemas.versions import Evaluation
from schemas.wisdom import Preset, Recommendation, TransferScore, recommend
from state import evaluations, store, versions
from worker import distill, reducer
from worker import episodes as episodes_mod
from worker import presets as presets_mod
from worker.evaluation import split_score
from worker.reasoners.heuristic import HeuristicReasoner

TITLE = "## Transfer: leave one repository out"
CORPORA = ("flask", "fd", "commander.js")
WARM = (5, 10)
SEARCH = (10, 20)
METHODS = ("defaults", "recommended", "warm-5", "warm-10", "tpe-10", "tpe-20", "random-10",
           "random-20")


def log(message: str) -> None:
    print(f"[transfer {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the service's loop


def _record(client: redis.Redis, settings: Settings, name: str, repo: Repository,
            version: int, point: ParameterPoint) -> RepoEvaluation:
    """What ``worker.evaluation.evaluate`` records, without pushing the failures."""
    tuning = split_score(repo, point, "tuning")
    heldout = split_score(repo, point, "heldout")
    verdict = versions.record_evaluation(
        client, Evaluation(version=version, mean_ndcg=tuning.ndcg, cases=max(tuning.cases, 1)),
        f"auto:{version}:{name}"[:64], settings)
    result = RepoEvaluation(version=version, repo=name, tuning=tuning, heldout=heldout,
                            verdict=verdict)
    evaluations.finish(client, result)
    return result


def service_loop(client: redis.Redis, settings: Settings, repos: dict[str, Repository],
                 seed: int, goal: int) -> tuple[list[tuple[int, float]], str]:
    """The loop on ``repos`` (all registered) until ``goal`` versions were evaluated:
    (version, pooled tuning NDCG) per evaluated version, and why it stopped early if so."""
    for name, repo in repos.items():
        evaluations.add_repo(client, RegisteredRepo(name=name, path=str(repo.path)))
    reasoner = HeuristicReasoner()
    evaluated: list[tuple[int, float]] = []
    scored: set[int] = set()
    while len(evaluated) < goal:
        v = versions.current_number(client)
        record = versions.get(client, v)
        assert record is not None
        if v not in scored:
            rows = [_record(client, settings, n, r, v, record.params) for n, r in repos.items()]
            cases = sum(r.tuning.cases for r in rows)
            evaluated.append((v, sum(r.tuning.ndcg * r.tuning.cases for r in rows) / cases))
            scored.add(v)
            if versions.current_number(client) != v or len(evaluated) >= goal:
                continue  # rolled back: the rollback version is evaluated next
        rng = random.Random(seed * 100003 + v)
        share = max(1, SAMPLE // len(repos))
        sample = []
        for repo in repos.values():
            failing = repo.failures(record.params, "tuning", params_version=v)
            sample += rng.sample(failing, min(share, len(failing)))
        rng.shuffle(sample)
        moved = False
        for batch in chunk(sample, settings.batch_size):
            episode = episodes_mod.process(client, batch, settings, reasoner)
            if episode is None:
                continue
            reducer.merge(client, episode, settings)
            if versions.current_number(client) != v:
                moved = True
                break
        if not moved and versions.tick(client, settings, force=True) is None:
            return evaluated, f"stalled at v{v} after {len(evaluated)} evaluations"
    return evaluated, ""


def learn(client: redis.Redis, settings: Settings, repos: dict[str, Repository], seed: int,
          goal: int, *, jointly: bool = False) -> tuple[list[Preset], str]:
    """The measured presets learned on ``repos`` (what ``distill.measured_presets`` builds,
    the presets every distillation puts first), and why learning stopped early if it did.

    The protocol: each repository learned **separately** (``learn_alone``: a fresh
    service on it alone, ``goal`` evaluated versions), so no repository's best was shaped
    by another's tuning cases, failures or scores; then one service holds all of them
    (``gather``) and builds the presets. ``jointly``: the old protocol, a diagnostic: one
    service with all of ``repos`` registered, every version evaluated on each and shaped by
    their pooled failures and tuning NDCG, for ``goal`` versions, then a distillation."""
    if jointly:
        client.flushdb()
        _, stopped = service_loop(client, settings, repos, seed, goal)
        distill.distill(client, settings, HeuristicReasoner(), force=True)
        wisdom = store.latest_wisdom(client)
        presets = [p for p in wisdom.presets if p.condition is not None] if wisdom else []
        return presets, stopped
    learned, stops = {}, []
    for name, repo in sorted(repos.items()):
        learned[name], stopped = learn_alone(client, settings, name, repo, seed, goal)
        if stopped:
            stops.append(f"{name} {stopped}")
    gather(client, settings, repos, learned)
    return distill.measured_presets(client, settings), "; ".join(stops)


Learned = list[tuple[ParameterPoint, RepoEvaluation]]


def learn_alone(client: redis.Redis, settings: Settings, name: str, repo: Repository,
                seed: int, goal: int) -> tuple[Learned, str]:
    """A fresh service with ``repo`` alone registered, from the defaults, for ``goal``
    evaluated versions: each evaluated version's parameters and its evaluation there.
    Nothing of another repository is in the state (no scores the judge could roll back
    to, no trajectory or insight the reasoner reads)."""
    client.flushdb()
    _, stopped = service_loop(client, settings, {name: repo}, seed, goal)
    out = []
    for row in evaluations.results(client):
        record = versions.get(client, row.version)
        if record is not None and row.repo == name:
            out.append((record.params, row))
    return out, stopped


def gather(client: redis.Redis, settings: Settings, repos: dict[str, Repository],
           learned: dict[str, Learned]) -> None:
    """One fresh service state holding every repository's separately learned evaluations,
    for the preset builder: each evaluated version made a version here (``set_manual``,
    noted with where it was learned; the defaults stay version 0) and its evaluation
    recorded under that number on its own repository only (``evaluations.finish``); then
    ``repos`` registered. So a repository's best is its best among the versions learned
    on it, and every other repository scores it only through ``worker.presets``'s
    leave-one-out transfer (the ranker on that repository's tuning cases)."""
    client.flushdb()
    for name in sorted(learned):
        for point, row in learned[name]:
            v = 0 if row.version == 0 and point == ParameterPoint() else versions.set_manual(
                client, point, f"{name} v{row.version}, learned on {name} alone",
                settings).version
            evaluations.finish(client, row.model_copy(update={"version": v}))
    for name, repo in sorted(repos.items()):
        evaluations.add_repo(client, RegisteredRepo(name=name, path=str(repo.path)))


def warm_tune(client: redis.Redis, settings: Settings, name: str, repo: Repository,
              start: ParameterPoint, seed: int, goal: int) -> list[ParameterPoint]:
    """A fresh service on ``repo`` alone, ``start`` made current: the evaluated points in
    order (the first is ``start``)."""
    client.flushdb()
    if start != ParameterPoint():
        versions.set_manual(client, start, "warm start", settings)
    evaluated, _ = service_loop(client, settings, {name: repo}, seed, goal)
    out = []
    for v, _ in evaluated:
        record = versions.get(client, v)
        assert record is not None
        out.append(record.params)
    return out


# ---------------------------------------------------------------- one fold


@dataclass
class Fold:
    name: str
    features: RepoFeatures
    heldout_commits: int
    picks: dict[str, list[ParameterPoint]] = field(default_factory=dict)  # per seed
    recs: list[Recommendation | None] = field(default_factory=list)
    learned: list[list[Preset]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # the robust preset's construction per seed ("none" without a robust preset), and its
    # leave-one-out transfers between the training corpora as distillation scored them
    constructions: list[str] = field(default_factory=list)
    transfers: list[str] = field(default_factory=list)
    # seed 0's training corpora's bests (where each version was learned)
    bests: list[str] = field(default_factory=list)
    # seed 0's robust-preset constructions, as distillation scored them
    candidates: list[ConstructionRow] = field(default_factory=list)


@dataclass(frozen=True)
class ConstructionRow:
    """One construction of seed 0's robust preset: its leave-one-out transfers between the
    training corpora (what chose), the point it makes from both, and that point's held-out
    effect on R with its interval (measured afterwards for the reader, never to choose)."""

    label: str
    built: str
    transfers: list[tuple[str, str, float, float, float]]  # (to, from, gain, low, high)
    worst: float
    mean: float
    chosen: bool
    target: tuple[float, float, float]


def _best(scorer: Scorer, points: list[ParameterPoint], budget: int) -> ParameterPoint:
    head = points[:budget]
    return max(head, key=lambda p: (scorer.tuning(p), -head.index(p)))


def _trace_best(trace: Trace, budget: int) -> ParameterPoint:
    return trace.pick(budget)[0]


def run_fold(target: str, paths: dict[str, Path], cache: Path, client: redis.Redis,
             settings: Settings, seeds: int, learn_goal: int) -> Fold:
    started = time.monotonic()
    repos = {n: open_repository(p, cache, window=2000) for n, p in paths.items()}
    repo = repos[target]
    scorer = Scorer(repo)
    fold = Fold(target, repository_features(repo), repo.case_meta("heldout").commits,
                {m: [] for m in METHODS})
    training = {n: r for n, r in repos.items() if n != target}
    for seed in range(seeds):
        presets, stopped = learn(client, settings, training, seed, learn_goal)
        if stopped:
            fold.notes.append(f"seed {seed}: learning {stopped}")
        rec = recommend(presets, fold.features) if presets else None
        fold.recs.append(rec)
        fold.learned.append(presets)
        robust = next((p for p in presets if p.selection is not None), None)
        selection = robust.selection if robust is not None else None
        fold.constructions.append(selection.chosen if selection is not None else "none")
        fold.transfers.append("" if selection is None else _transfers(next(
            c for c in selection.candidates if c.label == selection.chosen).transfers))
        if seed == 0:
            fold.candidates = _candidates_on(client, training, repo, presets)
            fold.bests = _bests_on(client, training)
        matched = rec is not None and rec.preset is not None
        start = rec.preset.params if rec is not None and rec.preset is not None else (
            ParameterPoint())
        warm = warm_tune(client, settings, target, repo, start, seed, max(WARM))
        tpe, rnd = run_tpe(scorer, seed, max(SEARCH)), run_random(scorer, seed, max(SEARCH))
        fold.picks["defaults"].append(ParameterPoint())
        fold.picks["recommended"].append(start)
        for b in WARM:
            fold.picks[f"warm-{b}"].append(_best(scorer, warm, b))
        for b in SEARCH:
            fold.picks[f"tpe-{b}"].append(_trace_best(tpe, b))
            fold.picks[f"random-{b}"].append(_trace_best(rnd, b))
        chosen = rec.preset.name if matched and rec is not None and rec.preset else "none"
        log(f"{target} seed {seed}: {len(presets)} presets learned, recommended {chosen}; "
            f"held-out rec {scorer.heldout_mean(start):.4f} vs defaults "
            f"{scorer.heldout_mean(ParameterPoint()):.4f}")
    fold.seconds = time.monotonic() - started
    fold.notes.append(_pooled_cache(fold, scorer, repo))
    return fold


def _transfers(transfers: Sequence[TransferScore]) -> str:
    return "; ".join(f"{'+'.join(t.built_from)}→{t.repo} {t.gain:+.4f} "
                     f"[{t.low:+.4f}, {t.high:+.4f}]" for t in transfers)


def _bests_on(client: redis.Redis, training: dict[str, Repository]) -> list[str]:
    """Each training corpus's best version as the preset builder sees it, with its own
    tuning gain and where it was learned (the note ``gather`` gave it)."""
    results = evaluations.results(client)
    params = {v: r.params for v in {x.version for x in results}
              if (r := versions.get(client, v)) is not None}
    out = []
    for b in presets_mod.best_versions(results, params, sorted(training)).values():
        record = versions.get(client, b.version)
        note = record.note if record is not None and record.note else "learned jointly"
        out.append(f"{b.label} ({note}; own tuning gain {b.gain:+.4f})")
    return out


def _candidates_on(client: redis.Redis, training: dict[str, Repository], target: Repository,
                   presets: list[Preset]) -> list[ConstructionRow]:
    """For the reader: the robust preset's constructions as distillation scored them from
    the training corpora's evaluations (leave-one-out transfer between them, recomputed by
    the same functions), and each one's point built from both, scored on R's held-out
    commits after the fact (never used to choose)."""
    results = evaluations.results(client)
    params = {v: r.params for v in {x.version for x in results}
              if (r := versions.get(client, v)) is not None}
    bests = presets_mod.best_versions(results, params, sorted(training))
    scored = presets_mod.cross_transfer(bests, training)
    chosen = presets_mod.select(scored)
    robust = next((p for p in presets if p.selection is not None), None)
    if robust is not None and chosen is not None:
        assert robust.params == chosen.final.point, "recomputed a different robust preset"
    base = target.evaluate(ParameterPoint(), "heldout").per_case
    return [ConstructionRow(
        s.construction.label, s.final.label,
        [(t.repo, "+".join(t.built_from), t.gain, t.low, t.high) for t in s.transfers],
        s.worst, s.mean, chosen is not None and s.construction == chosen.construction,
        paired_interval(target.evaluate(s.final.point, "heldout").per_case, base, target,
                        "heldout"))
        for s in scored]


_POOLED: dict[tuple[str, str], np.ndarray] = {}
_SCORERS: dict[str, tuple[Scorer, Repository]] = {}


def _pooled_cache(fold: Fold, scorer: Scorer, repo: Repository) -> str:
    _SCORERS[fold.name] = (scorer, repo)
    for method, points in fold.picks.items():
        _POOLED[(fold.name, method)] = np.mean([scorer.heldout(p) for p in points], axis=0)
    return ""


# ---------------------------------------------------------------- the report


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _verdict(low: float, high: float) -> str:
    return "**win**" if low > 0 else "**loss**" if high < 0 else "**tie**"


def _interval(fold: str, a: str, b: str) -> tuple[float, float, float]:
    _, repo = _SCORERS[fold]
    return paired_interval(_POOLED[(fold, a)], _POOLED[(fold, b)], repo, "heldout")


def _constructions(rows: list[ConstructionRow]) -> str:
    return _table(
        ["construction", "transfer between the training corpora (tuning Δ, 95 %)", "worst",
         "built from both", "R held-out Δ (95 %)"],
        [[("**" + row.label + "** (chosen)") if row.chosen else row.label,
          "; ".join(f"{frm}→{to} {g:+.4f} [{lo:+.4f}, {hi:+.4f}]"
                    for to, frm, g, lo, hi in row.transfers),
          f"{row.worst:+.4f}", row.built,
          f"{row.target[0]:+.4f} [{row.target[1]:+.4f}, {row.target[2]:+.4f}] "
          f"{_verdict(*row.target[1:])}"]
         for row in rows])


def _per_seed(values: list[str]) -> str:
    """``values`` per seed, said once when every seed gave the same."""
    if values and all(v == values[0] for v in values):
        return f"all {len(values)} seeds: {values[0]}"
    return "; ".join(f"seed {i}: {v}" for i, v in enumerate(values))


def _cell(d: tuple[float, float, float]) -> str:
    return f"{d[0]:+.4f} [{d[1]:+.4f}, {d[2]:+.4f}] {_verdict(*d[1:])}"


def report(folds: list[Fold], seeds: int, learn_goal: int, seconds: float, note: str) -> str:
    out = [TITLE, "",
           f"`python -m bench.transfer` — {seeds} seeds; per fold and seed each training "
           f"corpus learned **separately** for {learn_goal} evaluated versions; "
           f"{seconds / 60:.1f} min wall on a shared 2-core machine."
           + (f" {note}" if note else ""), "",
           "Per fold, R is the corpus left out. Each of the two training corpora is learned "
           "by a fresh service with it alone registered, from the defaults, on its tuning "
           "cases only; then one service state holds both corpora's evaluations and builds "
           "the presets (`worker.presets`), so a corpus's best is its best among versions "
           "learned on it alone, and the `robust` preset's leave-one-out transfer between "
           "the training corpora (built from one's best, scored on the other's tuning cases) "
           "is out-of-sample. Held-out NDCG is stored as evidence, never used to choose; "
           "presets are recommended from R's features alone. **held-out** = weighted "
           "NDCG@10 of the method's pick on R's held-out commits, median (min–max) over "
           "seeds; **Δ** columns are paired bootstrap 95 % intervals over R's held-out "
           "commits (`ranker.paired_interval`) after pooling seeds (each method's per-case "
           "held-out NDCG averaged over its seeds' picks). Evaluations are scored versions "
           "on R's tuning cases (the recommended preset costs none; warm tune's first "
           "evaluation is the preset itself).", ""]
    summary: list[list[object]] = []
    for fold in folds:
        scorer, _ = _SCORERS[fold.name]
        out += [f"### R = {fold.name}", "",
                f"Features: {fold.features.describe()}. Held-out commits: "
                f"{fold.heldout_commits}; {fold.seconds:.0f} s.", ""]
        chosen = [r.preset.name if r is not None and r.preset is not None else
                  ("no preset learned" if r is None else "none matched") for r in fold.recs]
        out.append("Recommended: " + _per_seed([f"`{c}`" for c in chosen]) + ".")
        first = next((r for r in fold.recs if r is not None), None)
        if first is not None:
            out.append(f"Seed 0's reason: {first.reason}.")
        if fold.bests:
            out.append("Seed 0's training bests: " + "; ".join(fold.bests) + ".")
        for i, presets in enumerate(fold.learned[:1]):
            for p in presets:
                moved = _moves(p.params)
                ev = "; ".join(f"{e.repo}{'' if e.measured_at_distillation else f' v{e.version}'}"
                               f": tuning {e.tuning_effect:+.4f}, "
                               f"held-out {e.heldout_effect:+.4f}" for e in p.evidence)
                cond = p.condition.describe() if p.condition else "-"
                how = f" = {p.selection.chosen}" if p.selection is not None else ""
                out.append(f"- seed {i} preset `{p.name}`{how} ({moved}) when {cond}; {ev}")
        out.append("Robust construction and its transfers: " + _per_seed(
            [f"`{c}` ({t})" if t else f"`{c}`"
             for c, t in zip(fold.constructions, fold.transfers, strict=True)]) + ".")
        if fold.candidates:
            out += ["", "Seed 0's robust-preset constructions, chosen by the worst-case "
                    "leave-one-out transfer between the training corpora (built from one "
                    "corpus's best only, scored on the other's tuning cases against the "
                    "defaults, 95 % paired interval over its tuning commits); the last column, "
                    "the point built from both on R's held-out commits, is measured afterwards "
                    "for the reader and never used to choose:", "",
                    _constructions(fold.candidates)]
        out.append("")
        rows: list[list[object]] = []
        for method in METHODS:
            means = [scorer.heldout_mean(p) for p in fold.picks[method]]
            d = _interval(fold.name, method, "defaults") if method != "defaults" else None
            versus: list[str] = []
            if method.startswith("warm") or method == "recommended":
                versus = ["; ".join(f"{m}: {_cell(_interval(fold.name, method, f'{m}-{n}'))}"
                                    for m in ("tpe", "random")) for n in SEARCH]
            rows.append([
                _label(method), _evals(method),
                f"{statistics.median(means):.4f} ({min(means):.4f}–{max(means):.4f})",
                "—" if d is None else _cell(d), *(versus or ["—"] * len(SEARCH))])
        out.append(_table(["method", "evaluations on R", "held-out NDCG",
                           "Δ vs defaults (pooled, 95 %)",
                           *(f"Δ vs (d) at {n} (pooled, 95 %)" for n in SEARCH)], rows))
        notes = [n for n in fold.notes if n]
        if notes:
            out += ["", "Notes: " + "; ".join(notes) + "."]
        out.append("")
        b = _interval(fold.name, "recommended", "defaults")
        warm = ["; ".join(f"{m}: {_verdict(*_interval(fold.name, f'warm-{w}', f'{m}-20')[1:])}"
                          for m in ("tpe", "random")) for w in WARM]
        summary.append([fold.name, _per_seed([f"`{c}`" for c in fold.constructions]),
                        fold.transfers[0] if fold.transfers else "", _cell(b), *warm])
    out += ["### Targets", "",
            _table(["R", "robust construction", "its transfer in training (seed 0)",
                    "(b) recommended − (a) defaults",
                    *(f"(c) warm {w} vs (d) 20" for w in WARM)], summary), ""]
    return "\n".join(out) + "\n"


def joint_section(client: redis.Redis, settings: Settings, paths: dict[str, Path],
                  cache: Path, learn_goal: int, folds: Sequence[str]) -> str:
    """A diagnostic beside the benchmark: the old protocol, both training corpora learned
    **jointly** by one service (seed 0, ``learn_goal`` versions, every version evaluated on
    both and shaped by their pooled failures and tuning NDCG), then per fold the robust
    constructions as that distillation scored them, the one chosen, and (for the reader,
    never to choose) the held-out effect on R of the point each builds from both."""
    repos = {n: open_repository(p, cache, window=2000) for n, p in paths.items()}
    out = ["### Diagnostic: the training corpora learned jointly (the old protocol)", "",
           f"Seed 0, {learn_goal} versions each evaluated on both training corpora, proposed "
           "from both corpora's failing tuning cases and kept or rolled back on their pooled "
           "tuning NDCG; then the same preset builder. Each corpus's best was partly fitted "
           "to the other's tuning cases, so the leave-one-out transfer between them is "
           "largely in-sample.", ""]
    for target in folds:
        training = {n: r for n, r in repos.items() if n != target}
        presets, _ = learn(client, settings, training, 0, learn_goal, jointly=True)
        rows = _candidates_on(client, training, repos[target], presets)
        out += [f"R = {target}; bests: " + "; ".join(_bests_on(client, training)) + ".", "",
                _constructions(rows), ""]
    return "\n".join(out) + "\n"


def _label(method: str) -> str:
    return {"defaults": "(a) defaults", "recommended": "(b) recommended preset",
            "warm-5": "(c) warm tune", "warm-10": "(c) warm tune", "tpe-10": "(d) TPE",
            "tpe-20": "(d) TPE", "random-10": "(d) random", "random-20": "(d) random"}[method]


def _evals(method: str) -> str:
    return {"defaults": "0", "recommended": "0"}.get(method, method.rsplit("-", 1)[-1])


def _moves(point: ParameterPoint) -> str:
    base = ParameterPoint().as_floats()
    moved = [f"{k} ×{v / base[k]:.2f}" for k, v in point.as_floats().items()
             if base[k] and abs(v / base[k] - 1) > 1e-6]
    return ", ".join(moved) or "the defaults"


# ---------------------------------------------------------------- entry points


def run(corpora_dir: Path = CORPORA_DIR, work_dir: Path | None = None,
        seeds: int = 5, learn_goal: int = 15, folds: Sequence[str] = CORPORA,
        note: str = "", jointly: bool = False) -> str:
    """Run the leave-one-repository-out benchmark and return its Markdown section."""
    started = time.monotonic()
    with scratch(work_dir, "ripmap-transfer-") as work, private_redis() as url:
        paths = {n: clone_bundle(corpora_dir / f"{n}.bundle", work / n) for n in CORPORA
                 if (corpora_dir / f"{n}.bundle").exists()}
        if len(paths) < 3:
            raise SystemExit(f"need the three corpora in {corpora_dir}")
        client = store.connect(url)
        settings = Settings(redis_url=url, reasoner="heuristic", data_dir=work)
        cache = work / "ranker"  # worker.evaluation.cache_dir(settings): one index cache
        results = [run_fold(t, paths, cache, client, settings, seeds, learn_goal)
                   for t in folds]
        text = report(results, seeds, learn_goal, time.monotonic() - started, note)
        if jointly:
            text += joint_section(client, settings, paths, cache, learn_goal, folds)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.transfer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", type=Path, default=CORPORA_DIR)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--learn", type=int, default=15,
                        help="versions evaluated on each training corpus per fold and seed")
    parser.add_argument("--fold", action="append", choices=CORPORA, default=[],
                        help="only these held-out corpora (repeatable; default all three)")
    parser.add_argument("--work", type=Path, default=None, help="keep clones and caches here")
    parser.add_argument("--note", default="")
    parser.add_argument("--jointly", action="store_true",
                        help="add a diagnostic, the old protocol: per fold the two training "
                             "corpora learned jointly by one service (seed 0), then the "
                             "robust constructions' leave-one-out transfer between them")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    text = run(args.corpora, args.work, args.seeds, args.learn, args.fold or CORPORA, args.note,
               args.jointly)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
