"""Head-to-head: the service's reasoning loop against Optuna TPE, random search and the
seed script's one-episode-at-a-time rule, at equal budgets of evaluated parameter versions.

``python -m bench.headtohead [--corpora DIR] [--budgets 10,20,30] [--seeds 5]
[--repo PATH ...] [--out FILE]`` prints (and with ``--out`` writes) a Markdown section;
``run(...)`` returns the same section for ``bench/run.py``. Progress goes to stderr.

Methods (every one searches the same space, ``SPACE``, built once from ``PARAM_SPECS``):

* **service** — the service's own code paths, in-process against a private redis-server
  (no Celery transport): evaluate the current version on the tuning cases and record it
  with ``state.versions.record_evaluation`` (which may roll back, creating a version);
  sample up to 40 of that version's failing cases (``random.Random(seed*100003+version)``),
  batch them by 5 (``producer.api.chunk``), run each batch's episode with
  ``worker.episodes.process`` and the heuristic reasoner, merge it with
  ``worker.reducer.merge`` (votes; consensus step at quorum, trust region applies) until a
  new version appears; if none appears after all batches, ``versions.tick(force=True)``;
  if still none, the run stops early (recorded). The stored point is projected into
  ``SPACE`` before it is scored.
* **tpe** — ``optuna.samplers.TPESampler(multivariate=True, n_startup_trials=5, seed=s)``,
  defaults enqueued first, objective = tuning NDCG.
* **random** — seeded independent draws from ``SPACE``, defaults first.
* **seed-rule** — the seed script's loop: one episode (5 sampled failing cases of the
  current point, heuristic reasoner) at a time, its proposals applied directly to the
  current point with ``state.stepping.apply`` (no consensus, no rollback), evaluated, kept.
  These single-episode steps also feed the rule audit: per failure signature (the whole
  step) and per rule (each proposed change applied alone from the same point, scored
  outside the method's budget).

Every method is run once per seed at the largest budget; the smaller budgets are prefixes
of that run (every method here is sequential and seeded, so a run with budget 10 is the
first 10 evaluations of a run with budget 30). A method's pick at budget B is its best
point by tuning NDCG among its first B evaluations.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.common import clone_bundle, private_redis, scratch
from producer.api import chunk
from ranker import Repository, open_repository, paired_interval
from schemas.failures import FailureBatch
from schemas.params import PARAM_SPECS, ParameterPoint
from schemas.settings import Settings
from schemas.versions import Evaluation
from state import stepping, store, versions
from tests.services import ROOT
from worker import episodes as episodes_mod
from worker import reducer, signatures
from worker.reasoners.base import EpisodeRequest
from worker.reasoners.heuristic import HeuristicReasoner
from worker.reducer import MIN_VOTE_CONFIDENCE

CORPORA_DIR = ROOT.parent / "shared" / "corpora"  # beside the checkout
TITLE = "## Head-to-head: the service's loop against TPE and random search"
CORPORA = ("flask", "fd", "commander.js")
METHODS = ("service", "tpe", "random", "seed-rule")
SAMPLE = 40          # failing cases reasoned about per version (service)
NEUTRAL = 1e-4       # |Δ tuning NDCG| below this counts as neutral in the rule audit
STALL_LIMIT = 20     # seed-rule: episodes in a row without a proposal before it stops


def log(message: str) -> None:
    print(f"[headtohead {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the search space


@dataclass(frozen=True)
class Dim:
    low: float
    high: float
    log: bool
    integer: bool = False


def _dim(name: str) -> Dim:
    spec = PARAM_SPECS[name]
    if name == "pagerank_alpha":
        return Dim(max(spec.floor, 0.05), min(spec.ceiling, 0.99), log=False)
    if name == "focus_max_hops":
        # integers; 0 is the ranker's equivalent of the step floor 0.5 (h <= value)
        return Dim(0, 4, log=False, integer=True)
    # multiplicative parameters: log scale, capped to 1/10x..10x the default
    return Dim(max(spec.floor, spec.default / 10), min(spec.ceiling, spec.default * 10), log=True)


SPACE: dict[str, Dim] = {name: _dim(name) for name in PARAM_SPECS}


def project(point: ParameterPoint) -> ParameterPoint:
    """The point clamped into SPACE (integers rounded)."""
    values = {}
    for name, value in point.as_floats().items():
        d = SPACE[name]
        v = min(max(value, d.low), d.high)
        values[name] = float(round(v)) if d.integer else v
    return ParameterPoint.model_validate(values)


def defaults() -> ParameterPoint:
    return project(ParameterPoint())


def random_point(rng: random.Random) -> ParameterPoint:
    values: dict[str, float] = {}
    for name, d in SPACE.items():
        if d.integer:
            values[name] = float(rng.randint(int(d.low), int(d.high)))
        elif d.log:
            values[name] = math.exp(rng.uniform(math.log(d.low), math.log(d.high)))
        else:
            values[name] = rng.uniform(d.low, d.high)
    return ParameterPoint.model_validate(values)


def space_text() -> str:
    parts = []
    for name, d in SPACE.items():
        kind = "int" if d.integer else "log" if d.log else "lin"
        parts.append(f"`{name}` {d.low:g}–{d.high:g} ({kind})")
    return "; ".join(parts)


# ---------------------------------------------------------------- scoring


@dataclass
class Scorer:
    """Tuning and held-out scores of points, memoised (a repeated point is not rescored,
    but it still counts as an evaluation for the method that asked)."""

    repo: Repository
    tuning_cache: dict[tuple[float, ...], float] = field(default_factory=dict)
    heldout_cache: dict[tuple[float, ...], np.ndarray] = field(default_factory=dict)

    @property
    def tuning_cases(self) -> int:
        return len(self.repo.cases("tuning"))

    def tuning(self, point: ParameterPoint) -> float:
        key = tuple(point.as_floats().values())
        if key not in self.tuning_cache:
            self.tuning_cache[key] = float(self.repo.evaluate(point, "tuning").ndcg)
        return self.tuning_cache[key]

    def heldout(self, point: ParameterPoint) -> np.ndarray:
        key = tuple(point.as_floats().values())
        if key not in self.heldout_cache:
            self.heldout_cache[key] = np.asarray(self.repo.evaluate(point, "heldout").per_case,
                                                 np.float64)
        return self.heldout_cache[key]

    def heldout_mean(self, point: ParameterPoint) -> float:
        return float(self.repo.case_meta("heldout").weighted_mean(self.heldout(point)))


@dataclass
class Trace:
    """One method's run on one seed: evaluated points in order, and its costs."""

    points: list[tuple[ParameterPoint, float]] = field(default_factory=list)
    episodes: list[int] = field(default_factory=list)  # episodes run when each was evaluated
    stopped: str = ""
    rollbacks: list[int] = field(default_factory=list)  # evaluation indexes of rollbacks

    def add(self, point: ParameterPoint, ndcg: float, episodes: int = 0) -> None:
        self.points.append((point, ndcg))
        self.episodes.append(episodes)

    def pick(self, budget: int) -> tuple[ParameterPoint, float, int, int]:
        """Best by tuning among the first ``budget`` evaluations: point, tuning NDCG,
        evaluations used, episodes run by then."""
        head = self.points[:budget]
        i = max(range(len(head)), key=lambda k: (head[k][1], -k))
        return head[i][0], head[i][1], len(head), self.episodes[len(head) - 1]


@dataclass
class AuditCounts:
    helped: int = 0
    hurt: int = 0
    neutral: int = 0
    delta_sum: float = 0.0

    def add(self, delta: float) -> None:
        self.delta_sum += delta
        if delta > NEUTRAL:
            self.helped += 1
        elif delta < -NEUTRAL:
            self.hurt += 1
        else:
            self.neutral += 1


# ---------------------------------------------------------------- the methods


def run_service(repo: Repository, scorer: Scorer, client: object, settings: Settings,
                seed: int, budget: int) -> Trace:
    """The service's loop, in-process on the real functions against a private redis."""

    client.flushdb()  # type: ignore[attr-defined]
    reasoner = HeuristicReasoner()
    trace, episodes, scored = Trace(), 0, set()
    while len(trace.points) < budget:
        v = versions.current_number(client)  # type: ignore[arg-type]
        record = versions.get(client, v)  # type: ignore[arg-type]
        assert record is not None
        point = project(record.params)
        if v not in scored:
            if record.reason == "rollback":
                trace.rollbacks.append(len(trace.points))
            ndcg = scorer.tuning(point)
            trace.add(point, ndcg, episodes)
            scored.add(v)
            versions.record_evaluation(
                client,  # type: ignore[arg-type]
                Evaluation(version=v, mean_ndcg=min(1.0, max(0.0, ndcg)),
                           cases=scorer.tuning_cases),
                f"h2h-{seed}-{v}", settings)
            if versions.current_number(client) != v:  # type: ignore[arg-type]
                continue  # rolled back: the rollback version is evaluated next
            if len(trace.points) >= budget:
                break
        failures = repo.failures(point, "tuning", params_version=v)
        rng = random.Random(seed * 100003 + v)
        sample = rng.sample(failures, min(SAMPLE, len(failures)))
        moved = False
        for batch in chunk(sample, settings.batch_size):
            episode = episodes_mod.process(client, batch, settings, reasoner)  # type: ignore[arg-type]
            if episode is None:
                continue
            episodes += 1
            reducer.merge(client, episode, settings)  # type: ignore[arg-type]
            if versions.current_number(client) != v:  # type: ignore[arg-type]
                moved = True
                break
        if not moved and versions.tick(client, settings, force=True) is None:  # type: ignore[arg-type]
            trace.stopped = (f"stalled at v{v} after {len(trace.points)} evaluations "
                             f"({len(failures)} failing cases, no step even when forced)")
            break
    trace.episodes[-1] = episodes  # episodes run by the end
    return trace


def run_tpe(scorer: Scorer, seed: int, budget: int) -> Trace:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trace = Trace()

    def objective(trial: optuna.Trial) -> float:
        values: dict[str, float] = {}
        for name, d in SPACE.items():
            if d.integer:
                values[name] = float(trial.suggest_int(name, int(d.low), int(d.high)))
            else:
                values[name] = trial.suggest_float(name, d.low, d.high, log=d.log)
        point = ParameterPoint.model_validate(values)
        ndcg = scorer.tuning(point)
        trace.add(point, ndcg)
        return ndcg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # multivariate TPE is "experimental"
        sampler = optuna.samplers.TPESampler(multivariate=True, n_startup_trials=5, seed=seed)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        start = {n: (int(v) if SPACE[n].integer else v) for n, v in defaults().as_floats().items()}
        study.enqueue_trial(start)
        study.optimize(objective, n_trials=budget)
    return trace


def run_random(scorer: Scorer, seed: int, budget: int) -> Trace:
    rng = random.Random(seed)
    trace = Trace()
    point = defaults()
    while len(trace.points) < budget:
        trace.add(point, scorer.tuning(point))
        point = random_point(rng)
    return trace


def run_seed_rule(repo: Repository, scorer: Scorer, seed: int, budget: int,
                  audit: dict[str, AuditCounts],
                  rule_audit: dict[str, AuditCounts] | None = None) -> Trace:
    """One episode at a time, proposals applied directly to the current point, kept.

    ``rule_audit`` (when given) gets, for every proposed change, the tuning-NDCG change of
    that change alone from the current point (scored outside the method's budget)."""

    reasoner = HeuristicReasoner()
    trace, episodes, idle = Trace(), 0, 0
    point = defaults()
    ndcg = scorer.tuning(point)
    trace.add(point, ndcg)
    while len(trace.points) < budget:
        failures = repo.failures(point, "tuning", params_version=len(trace.points))
        if not failures:
            trace.stopped = f"no failing cases left after {len(trace.points)} evaluations"
            break
        rng = random.Random(seed * 100003 + episodes)
        batch = FailureBatch(failures=rng.sample(failures, min(5, len(failures))))
        sigs = signatures.batch_signatures(list(batch.failures))
        reply = reasoner.reason(EpisodeRequest(failures=list(batch.failures), params=point,
                                               signatures=sigs, params_version=len(trace.points)))
        episodes += 1
        answer = reply.answer
        if answer is None or not answer.proposed_changes or answer.confidence < MIN_VOTE_CONFIDENCE:
            idle += 1
            if idle >= STALL_LIMIT:
                trace.stopped = f"{idle} episodes in a row proposed nothing"
                break
            continue
        idle = 0
        if rule_audit is not None:
            for change in answer.proposed_changes:
                alone = project(stepping.apply(point, [change]))
                rule_audit.setdefault(
                    f"{change.direction.value} {change.param} {change.magnitude.value}",
                    AuditCounts()).add(scorer.tuning(alone) - ndcg)
        new = project(stepping.apply(point, answer.proposed_changes))
        new_ndcg = scorer.tuning(new)
        for name in sigs:
            audit.setdefault(name, AuditCounts()).add(new_ndcg - ndcg)
        point, ndcg = new, new_ndcg
        trace.add(point, ndcg, episodes)
    trace.episodes[-1] = episodes
    return trace


# ---------------------------------------------------------------- one repository


@dataclass
class RepoResult:
    name: str
    tuning_cases: int
    heldout_cases: int
    default_tuning: float
    default_heldout: float
    traces: dict[str, list[Trace]]
    scorer: Scorer
    seconds: float


def run_repository(name: str, path: Path, cache_dir: Path, budgets: Sequence[int],
                   seeds: int, client: object, settings: Settings,
                   audit: dict[str, AuditCounts],
                   rule_audit: dict[str, AuditCounts] | None = None) -> RepoResult:
    started = time.monotonic()
    log(f"{name}: opening {path}")
    repo = open_repository(path, cache_dir, window=2000)
    scorer = Scorer(repo)
    top = max(budgets)
    traces: dict[str, list[Trace]] = {m: [] for m in METHODS}
    runners: dict[str, Callable[[int], Trace]] = {
        "service": lambda s: run_service(repo, scorer, client, settings, s, top),
        "tpe": lambda s: run_tpe(scorer, s, top),
        "random": lambda s: run_random(scorer, s, top),
        "seed-rule": lambda s: run_seed_rule(repo, scorer, s, top, audit, rule_audit),
    }
    for seed in range(seeds):
        for method in METHODS:
            t0 = time.monotonic()
            trace = runners[method](seed)
            traces[method].append(trace)
            best = max(n for _, n in trace.points)
            log(f"{name} seed {seed} {method}: {len(trace.points)} evaluations, best tuning "
                f"{best:.4f}, {trace.episodes[-1]} episodes, {time.monotonic() - t0:.1f}s"
                + (f" ({trace.stopped})" if trace.stopped else ""))
    d = defaults()
    return RepoResult(name, scorer.tuning_cases, len(repo.cases("heldout")), scorer.tuning(d),
                      scorer.heldout_mean(d), traces, scorer, time.monotonic() - started)


# ---------------------------------------------------------------- report


def _fmt_range(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.4f} ({min(values):.4f}–{max(values):.4f})"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report(results: list[RepoResult], budgets: Sequence[int], seeds: int,
           audit: dict[str, AuditCounts], seconds: float, note: str,
           rule_audit: dict[str, AuditCounts] | None = None) -> str:
    out = [TITLE, ""]
    out.append(
        f"`python -m bench.headtohead` — budgets {', '.join(map(str, budgets))} evaluated "
        f"parameter versions, {seeds} seeds each, on {', '.join(r.name for r in results)}; "
        f"{seconds / 60:.1f} min wall on a shared 2-core machine. {note}".strip())
    out.append("")
    out.append(
        "Every method searches one space built from `PARAM_SPECS` (step floor/ceiling, "
        "capped to 1/10×–10× the default on a log scale for the multiplicative parameters): "
        + space_text() + ". The service's points are projected into it before scoring. "
        "A method's **pick** at a budget is its best point by tuning NDCG among its first "
        "B evaluations (for the service this is the version `best` would name: every "
        "evaluation covers all tuning cases). Each method ran once per seed at the largest "
        "budget; smaller budgets are prefixes of the same run (all methods are sequential "
        "and seeded, so this equals a separate shorter run).")
    out.append("")
    out.append(
        "**held-out** = weighted NDCG@10 of the pick on the held-out commits, median "
        "(min–max) over seeds; **gap** = median over seeds of (tuning − held-out) of the "
        "pick; **Δ vs service** = held-out(service) − held-out(method), as a paired "
        "bootstrap 95 % interval over held-out commits (`ranker.paired_interval`) after "
        "**pooling seeds**: each method's per-case held-out NDCG is averaged over its "
        "seeds' picks, then the two pooled vectors are paired. Verdict for the service: "
        "**win** if the interval is above 0, **loss** if below, **tie** otherwise. Cost: "
        "evaluations (versions scored, rollbacks included), case rankings = evaluations × "
        "tuning cases, episodes run (medians over seeds).")
    for r in results:
        out += ["", f"### {r.name}", "",
                f"{r.tuning_cases} tuning / {r.heldout_cases} held-out cases; defaults: "
                f"tuning {r.default_tuning:.4f}, held-out {r.default_heldout:.4f}; "
                f"{r.seconds:.0f} s.", ""]
        rows = []
        meta = r.scorer.repo.case_meta("heldout")
        for b in budgets:
            pooled: dict[str, np.ndarray] = {}
            for m in METHODS:
                picks = [t.pick(b) for t in r.traces[m]]
                held = [r.scorer.heldout_mean(p[0]) for p in picks]
                gap = [p[1] - h for p, h in zip(picks, held, strict=True)]
                pooled[m] = np.mean([r.scorer.heldout(p[0]) for p in picks], axis=0)
                evals = statistics.median(p[2] for p in picks)
                eps = statistics.median(p[3] for p in picks)
                short = sum(1 for p in picks if p[2] < b)
                if m == "service":
                    delta = "—"
                else:
                    d, lo, hi = paired_interval(pooled["service"], pooled[m], meta, "heldout")
                    verdict = "win" if lo > 0 else "loss" if hi < 0 else "tie"
                    delta = f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}] **{verdict}**"
                rows.append([b, m, _fmt_range([p[1] for p in picks]), _fmt_range(held),
                             f"{statistics.median(gap):+.4f}", delta,
                             f"{evals:g}" + (f" ({short} short)" if short else ""),
                             f"{evals * r.tuning_cases:,.0f}", f"{eps:g}"])
        out.append(_table(["budget", "method", "tuning NDCG of pick", "held-out NDCG",
                           "gap", "Δ vs service (pooled, 95 %)", "evaluations",
                           "case rankings", "episodes"], rows))
        rolled = [sum(1 for i in t.rollbacks if i < b) for b in budgets
                  for t in r.traces["service"]]
        per_budget = [statistics.median(rolled[k * len(r.traces["service"]):
                                                (k + 1) * len(r.traces["service"])])
                      for k in range(len(budgets))]
        counts = ", ".join(f"{n:g} of {b}" for n, b in zip(per_budget, budgets, strict=True))
        out += ["", f"Service rollbacks among its evaluations (median over seeds): {counts}."]
        stops = [f"{m} seed {i}: {t.stopped}" for m in METHODS
                 for i, t in enumerate(r.traces[m]) if t.stopped]
        if stops:
            out += ["", "Early stops: " + "; ".join(stops) + "."]
    out += ["", "### Rule audit (heuristic reasoner)", "",
            "Every seed-rule episode is one step from the current point by its proposals "
            "alone (`state.stepping.apply`, projected into the space); the change in tuning "
            "NDCG (all tuning cases) is attributed to each failure signature the episode's "
            f"batch showed (`worker.signatures.batch_signatures`). Neutral: |Δ| ≤ {NEUTRAL:g}. "
            "Counts pool all corpora and seeds; an episode with several signatures counts "
            "once for each.", ""]
    rows = [[f"`{name}`", c.helped, c.hurt, c.neutral,
             f"{c.delta_sum / max(1, c.helped + c.hurt + c.neutral):+.5f}"]
            for name, c in sorted(audit.items(), key=lambda kv: -(kv[1].helped + kv[1].hurt
                                                                  + kv[1].neutral))]
    out.append(_table(["signature", "helped", "hurt", "neutral", "mean Δ tuning NDCG"], rows))
    if rule_audit:
        out += ["", "Per rule: each change the seed-rule episodes proposed, applied **alone** "
                "from the same current point (scored outside the budget), so a rule is judged "
                "by its own step rather than by the batch's whole proposal.", ""]
        rows = [[f"`{name}`", c.helped, c.hurt, c.neutral,
                 f"{c.delta_sum / max(1, c.helped + c.hurt + c.neutral):+.5f}"]
                for name, c in sorted(rule_audit.items(),
                                      key=lambda kv: -(kv[1].helped + kv[1].hurt
                                                       + kv[1].neutral))]
        out.append(_table(["rule (change alone)", "helped", "hurt", "neutral",
                           "mean Δ tuning NDCG"], rows))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- entry points


def run(corpora_dir: Path | None = CORPORA_DIR, work_dir: Path | None = None,
        budgets: Sequence[int] = (10, 20, 30), seeds: int = 5,
        repos: Sequence[Path] = (), note: str = "") -> str:
    """Run the head-to-head and return its Markdown section."""
    started = time.monotonic()
    with scratch(work_dir, "ripmap-h2h-") as work, private_redis() as url:
        targets = _targets(corpora_dir, repos, work)
        client = store.connect(url)
        settings = Settings(redis_url=url, reasoner="heuristic")
        audit: dict[str, AuditCounts] = {}
        rule_audit: dict[str, AuditCounts] = {}
        results = [run_repository(name, path, work / "cache", budgets, seeds, client,
                                  settings, audit, rule_audit) for name, path in targets]
    return report(results, budgets, seeds, audit, time.monotonic() - started, note, rule_audit)


def _targets(corpora_dir: Path | None, repos: Sequence[Path], work: Path
             ) -> list[tuple[str, Path]]:
    """The repositories to run on: ``repos`` as given, else clones of the corpus bundles."""
    targets = [(Path(p).resolve().name, Path(p)) for p in repos]
    if corpora_dir is not None and not repos:
        targets = [(name, clone_bundle(corpora_dir / f"{name}.bundle", work / name))
                   for name in CORPORA if (corpora_dir / f"{name}.bundle").exists()]
    if not targets:
        raise SystemExit("no repositories: give --repo PATH or --corpora DIR with bundles")
    return targets


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.headtohead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", type=Path, default=CORPORA_DIR,
                        help="directory of flask/fd/commander.js .bundle files")
    parser.add_argument("--budgets", default="10,20,30",
                        help="comma-separated budgets of evaluated versions")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repo", type=Path, action="append", default=[],
                        help="a git repository of your own (repeatable; replaces the corpora)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep clones and index caches here (default: a temp dir)")
    parser.add_argument("--note", default="", help="a sentence added to the section's intro")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    budgets = sorted({int(b) for b in args.budgets.split(",") if b.strip()})
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    text = run(args.corpora, args.work, budgets, args.seeds, args.repo, args.note)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
