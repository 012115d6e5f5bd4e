"""The closed loop's commands: ``evaluate``, ``repo add|list|remove`` and ``tune``."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from rich import box
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ops import embedded
from producer.api import Producer
from ranker import Repository, RepositoryError, open_repository
from ranker.features import repository_features
from ranker.repository import Split
from schemas.params import ParameterPoint
from schemas.repos import RegisteredRepo, RepoEvaluation
from schemas.settings import Settings
from schemas.tasks import DISPATCH_EVALUATIONS
from schemas.versions import ParamVersion
from state import evaluations, presets, store, versions
from worker import evaluation
from worker.evaluation import cache_dir

out = Console()
err = Console(stderr=True)
USAGE_ERROR = 2
BUDGET_TTL = 60  # seconds a tune run's budget outlives its last poll


class BadInput(Exception):
    """A problem with what the user asked for: printed in one line, exit status 2."""


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar for the ranker's index build (stages: history, tags, cases)."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"indexing: {stage}", total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield report


def open_repo(path: Path, settings: Settings, window: int) -> Repository:
    """The repository's ranker index (built with a progress bar); BadInput when unusable."""
    if not path.is_dir():
        raise BadInput(f"--repo {path}: no such directory")
    try:
        with _progress() as report:
            return open_repository(path, cache_dir(settings), window=window, progress=report)
    except RepositoryError as exc:
        raise BadInput(f"--repo: {exc}") from None


def guard(command: Callable[[argparse.Namespace, Settings], int]
           ) -> Callable[[argparse.Namespace, Settings], int]:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return command(args, settings)
        except BadInput as exc:
            err.print(f"[bold red]error:[/] {exc} (nothing was written)", highlight=False)
            return USAGE_ERROR
    run.__doc__ = command.__doc__
    return run


# --- evaluate ---------------------------------------------------------------------------

def _point(args: argparse.Namespace, settings: Settings) -> tuple[ParameterPoint, int | None]:
    if args.params is not None:
        return _read_params(args.params), None
    if args.version is None:
        return ParameterPoint(), None
    with embedded.service(settings, workers=False) as live:
        record = versions.get(store.connect(live.state_url), args.version)
    if record is None:
        raise BadInput(f"--version {args.version}: no such parameter version")
    return record.params, record.version


def _read_params(path: Path) -> ParameterPoint:
    try:
        return ParameterPoint.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise BadInput(f"--params {path}: {str(exc).splitlines()[0]}") from None


def evaluation_report(repo: Repository, point: ParameterPoint, splits: list[Split],
                      sensitivity: bool) -> dict[str, Any]:
    """What ``evaluate --json`` prints: deterministic (no timings), so runs compare byte
    for byte."""
    report: dict[str, Any] = {
        "repo": {"name": repo.name, "file_count": repo.file_count,
                 "languages": dict(sorted(repo.languages.items())),
                 "untagged_files": repo.untagged_files, "skipped_files": repo.skipped_files,
                 "cases": repo.case_counts},
        "params": point.as_floats(),
    }
    for split in splits:
        report[split] = repo.evaluate(point, split).as_dict()
    if sensitivity:
        report["sensitivity"] = repo.sensitivity(point).as_dict()
    return report


@guard
def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    """Score parameters on a repository's history: tuning and held-out NDCG@10."""
    point, version = _point(args, settings)
    started = time.perf_counter()
    repo = open_repo(args.repo, settings, args.window)
    opened = time.perf_counter() - started
    splits: list[Split] = ["tuning", "heldout"] if args.cases == "both" else [args.cases]
    report = evaluation_report(repo, point, splits, not args.no_sensitivity)
    report["params_version"] = version
    failures = repo.failures(point, "tuning" if args.cases == "both" else args.cases,
                             params_version=version) if args.failures_out else []
    if args.failures_out:
        args.failures_out.write_text("".join(f.model_dump_json() + "\n" for f in failures))
    if args.json:
        sys.stdout.write(json.dumps(report, sort_keys=True, indent=2) + "\n")
        return 0
    _print_evaluation(report, opened, time.perf_counter() - started - opened)
    if args.failures_out:
        out.print(f"{len(failures)} failures written to {args.failures_out}")
    return 0


def _print_evaluation(report: dict[str, Any], opened: float, scored: float) -> None:
    repo = report["repo"]
    langs = ", ".join(f"{k} {v}" for k, v in repo["languages"].items()) or "none"
    out.print(f"[bold]{repo['name']}[/]: {repo['file_count']} files ({langs}); "
              f"{repo['untagged_files']} without a grammar, {repo['skipped_files']} skipped "
              f"(binary or too large)")
    table = Table(title="NDCG@10 (95 % interval, whole commits resampled)")
    for col in ("set", "NDCG", "interval", "cases", "commits"):
        table.add_column(col)
    for split in ("tuning", "heldout", "all"):
        if split in report:
            ev = report[split]
            table.add_row(split, f"{ev['ndcg']:.4f}", f"[{ev['low']:.4f}, {ev['high']:.4f}]",
                          str(ev["cases"]), str(ev["commits"]))
    out.print(table)
    if "sensitivity" in report:
        _print_sensitivity(report["sensitivity"])
    out.print(f"index {opened:.2f} s, scoring {scored:.2f} s")


def _print_sensitivity(sens: dict[str, Any]) -> None:
    table = Table(title="One parameter at a time (tuning NDCG at a step down / up)")
    for col in ("parameter", "value", "down", "NDCG", "up", "NDCG", ""):
        table.add_column(col)
    for e in sens["effects"]:
        table.add_row(e["name"], f"{e['value']:g}", f"{e['low_value']:g}",
                      f"{e['ndcg_low']:.4f}", f"{e['high_value']:g}", f"{e['ndcg_high']:.4f}",
                      "inert" if e["inert"] else "")
    out.print(table)
    inert = ", ".join(sens["inert"]) or "none"
    out.print(f"inert on this repository (no ranking moves): {inert}")


# --- repo -------------------------------------------------------------------------------

@guard
def cmd_repo(args: argparse.Namespace, settings: Settings) -> int:
    """Register, list or remove the repositories every new version is evaluated on."""
    with embedded.service(settings, workers=False) as live:
        client = store.connect(live.state_url)
        if args.action == "list":
            _print_repos(evaluations.repos(client))
            return 0
        if args.action == "remove":
            if not evaluations.remove_repo(client, _name_arg(args)):
                raise BadInput(f"no registered repository named {args.target!r}")
            out.print(f"removed {args.target}")
            return 0
        repo = register(client, Path(_name_arg(args)), args.name, args.window, settings,
                        args.follow_head)
    at = f"at {repo.commit[:12]}" if repo.commit else "following HEAD"
    out.print(f"registered {repo.name} ({repo.path} {at}, window {repo.window})")
    return 0


def _name_arg(args: argparse.Namespace) -> str:
    if not args.target:
        raise BadInput(f"repo {args.action} needs a {'path' if args.action == 'add' else 'name'}")
    return str(args.target)


def register(client: redis.Redis, path: Path, name: str | None, window: int,
             settings: Settings, follow_head: bool = False) -> RegisteredRepo:
    """Check ``path`` is a usable repository (building its index), register it, and make
    the current version due there."""
    repo = open_repo(path, settings, window)
    name = name or default_name(repo)
    if evaluations.get_repo(client, name) is not None:
        raise BadInput(f"a repository named {name!r} is registered already "
                       "(--name to choose another)")
    ensure_registered(client, path, name, window, "" if follow_head else repo.index.head)
    evaluations.mark_due(client, versions.current_number(client), [name])
    entry = evaluations.get_repo(client, name)
    assert entry is not None  # just registered
    return entry


def _print_repos(repos: list[RegisteredRepo]) -> None:
    table = Table(title="Registered repositories")
    for col in ("name", "path", "window"):
        table.add_column(col)
    for r in repos:
        table.add_row(r.name, r.path, str(r.window))
    out.print(table if repos else "no repositories registered (repo add PATH)")


# --- tune -------------------------------------------------------------------------------

@guard
def cmd_tune(args: argparse.Namespace, settings: Settings) -> int:
    """The closed loop on one repository: evaluate, reason about the failures, step, repeat
    until ``--evaluations`` versions were scored; writes the best version's parameters."""
    if args.evaluations < 1:
        raise BadInput("--evaluations must be at least 1")
    repo = open_repo(args.repo, settings, args.window)
    with embedded.service(settings) as live:
        client = store.connect(live.state_url)
        name = ensure_registered(client, args.repo, args.name or default_name(repo),
                                 args.window, repo.index.head)
        if args.start == "recommended":  # after the checks: a refused run changes nothing
            warm_start(client, live, repo)
        outcome = run_loop(client, live, name, args.evaluations, args.stall_seconds)
    write_best(outcome, args.output)
    return 130 if outcome.interrupted else 0


def warm_start(client: redis.Redis, settings: Settings, repo: Repository) -> ParamVersion | None:
    """Make the preset recommended for ``repo`` the current version (evaluated next, like
    any version), and say so; the version made, or None when none applies."""
    rec = presets.recommendation(client, repository_features(repo))
    if rec is None:
        out.print("warm start: no measured preset yet; starting from the current version")
        return None
    if not rec.matched or rec.preset is None:
        out.print(f"warm start: {rec.reason}; starting from the current version",
                  highlight=False)
        return None
    current = versions.get(client, versions.current_number(client))
    if current is not None and current.params == rec.preset.params:
        out.print(f"warm start: the current version v{current.version} already holds preset "
                  f"{rec.preset.name}", highlight=False)
        return None
    note = (f"warm start for {repo.name}: preset {rec.preset.name} of wisdom "
            f"v{rec.wisdom_version}")
    record = versions.set_manual(client, rec.preset.params, note, settings)
    effect = (f", expected held-out effect {rec.expected_effect:+.4f}"
              if rec.expected_effect is not None else "")
    out.print(f"warm start: v{record.version} = preset {rec.preset.name}{effect} ({rec.reason}); "
              "--from defaults to opt out", highlight=False)
    return record


@dataclass(frozen=True)
class LoopOutcome:
    """What a run of the loop evaluated, and the best version when it ended."""

    rows: list[RepoEvaluation]
    best: ParamVersion | None
    interrupted: bool


def run_loop(client: redis.Redis, settings: Settings, name: str, goal: int, stall: float
             ) -> LoopOutcome:
    """Start the loop on the registered repository ``name`` and follow it until ``goal``
    new evaluations landed, the loop idled ``stall`` seconds, or Ctrl-C."""
    seen = {r.version for r in evaluations.results(client) if r.repo == name}
    # the loop stops at the goal on this repository; a killed run's budget lapses
    evaluations.set_budget(client, name, goal, BUDGET_TTL)
    try:
        _kick(client, settings, name)
        rows, interrupted = _follow(client, name, seen, goal, stall)
    finally:
        evaluations.clear_budget(client, name)
    # the best of what this run saw (the loop may go on while the command winds down)
    best = max(rows, key=lambda r: r.tuning.ndcg).version if rows else versions.best_number(client)
    record = versions.get(client, best if best is not None else versions.current_number(client))
    return LoopOutcome(rows, record, interrupted)


def write_best(outcome: LoopOutcome, output: Path | None) -> None:
    """Print the run's summary and write the best version's parameters (ripmap's JSON), if
    the run evaluated any."""
    if outcome.rows and outcome.best is not None and output is not None:
        output.write_text(json.dumps(outcome.best.params.as_floats(), indent=2) + "\n")
        out.print(f"best version v{outcome.best.version} written to {output}")
    _summary(outcome.rows, outcome.best.version if outcome.best else None)


def default_name(repo: Repository) -> str:
    """The repository's directory name, made a valid registered name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", repo.name).lstrip("._-")[:100] or "repo"


def ensure_registered(client: redis.Redis, path: Path, name: str, window: int,
                      commit: str = "") -> str:
    """Register ``path`` as ``name`` at ``commit`` unless it is already; returns the name. A
    name taken by another path, or a path registered under another name (it would be
    evaluated twice), is refused."""
    resolved = str(path.resolve())
    for repo in evaluations.repos(client):
        if repo.path == resolved and repo.name != name:
            raise BadInput(f"{resolved} is registered as {repo.name!r} (--name {repo.name})")
    existing = evaluations.get_repo(client, name)
    if existing is not None and existing.path != resolved:
        raise BadInput(f"a repository named {name!r} is registered at {existing.path} "
                       "(--name to choose another)")
    if existing is None:
        evaluations.add_repo(client, _entry(name, resolved, window, commit))
    elif commit and existing.commit and existing.commit != commit:
        out.print(f"{name} stays pinned at {existing.commit[:12]} (its HEAD is now "
                  f"{commit[:12]}): repo remove {name}, then register it again to move on")
    return name


def _entry(name: str, path: str, window: int, commit: str) -> RegisteredRepo:
    try:
        return RegisteredRepo(name=name, path=path, window=window, added_at=time.time(),
                              commit=commit)
    except ValueError as exc:
        raise BadInput(f"--name {name!r}: {str(exc).splitlines()[-1].strip()}") from None


def _kick(client: redis.Redis, settings: Settings, name: str) -> None:
    """Make the current version due on this repository and send what is due now; when it
    was evaluated there before, push a fresh sample of its failures so the loop moves."""
    current = versions.current_number(client)
    producer = Producer(settings)
    try:
        if not evaluations.mark_due(client, current, [name]):
            pushed = evaluation.push_failures_again(client, settings, current, name, producer)
            out.print(f"v{current} was evaluated on {name} before: {pushed} of its failures "
                      "sent to the reasoners again")
        producer.send(DISPATCH_EVALUATIONS, [], None)
    finally:
        producer.close()


def _follow(client: redis.Redis, name: str, seen: set[int], goal: int, stall: float
            ) -> tuple[list[RepoEvaluation], bool]:
    """Show each new evaluation as it lands, until ``goal`` of them or the loop idles."""
    rows: list[RepoEvaluation] = []
    last = time.monotonic()
    try:
        with Live(_table(client, rows), console=out, refresh_per_second=2) as live:
            while len(rows) < goal:
                embedded.check_workers()
                new = [r for r in evaluations.results(client)
                       if r.repo == name and r.version not in seen]
                for r in new:
                    seen.add(r.version)
                    rows.append(r)
                    last = time.monotonic()
                live.update(_table(client, rows))
                evaluations.renew_budget(client, name, BUDGET_TTL)
                if time.monotonic() - last > stall:
                    err.print(f"no new evaluation for {stall:.0f} s: the loop is idle (no "
                              "failures left to reason about, or votes below quorum)")
                    break
                time.sleep(0.5)
    except KeyboardInterrupt:
        err.print("interrupted: everything learned so far is kept")
        return rows, True
    return rows, False


def _table(client: redis.Redis, rows: list[RepoEvaluation]) -> Table:
    table = Table(title="tune: each version scored on the repository's history",
                  box=box.SIMPLE_HEAD)
    for col, width in (("version", 7), ("tuning", 6), ("held-out", 8), ("verdict", 11),
                       ("changed", 20), ("why", 15)):  # 80 columns in all
        table.add_column(col, min_width=width, max_width=width, no_wrap=True,
                         overflow="ellipsis")
    for r in rows:
        record = versions.get(client, r.version)
        table.add_row(f"v{r.version}", f"{r.tuning.ndcg:.4f}", f"{r.heldout.ndcg:.4f}",
                      r.verdict, _changed(record), _why(record))
    return table


def _changed(record: ParamVersion | None) -> str:
    """The two largest moves of a version, e.g. ``focus_decay ×1.30``."""
    if record is None or not record.factors:
        return record.reason if record else "-"
    top = sorted(record.factors.items(), key=lambda kv: -abs(math.log(kv[1])))[:2]
    return ", ".join(f"{p} ×{f:.2f}" for p, f in top)


def _why(record: ParamVersion | None) -> str:
    """The first rationale among the votes that made the version, else its note."""
    if record is None:
        return ""
    for vote in record.provenance:
        for change in vote.changes:
            if change.rationale:
                return str(change.rationale).split(": ", 1)[-1]  # past "rule-based (…): "
    return record.note or record.reason


def _summary(rows: list[RepoEvaluation], best: int | None) -> None:
    if not rows:
        out.print("no version was evaluated")
        return
    first, top = rows[0], max(rows, key=lambda r: r.tuning.ndcg)
    out.print(f"{len(rows)} versions evaluated; tuning NDCG {first.tuning.ndcg:.4f} -> "
              f"{top.tuning.ndcg:.4f} (v{top.version}), held-out {first.heldout.ndcg:.4f} -> "
              f"{top.heldout.ndcg:.4f}; best version: "
              f"{'v' + str(best) if best is not None else 'none yet'}")


def add_parsers(sub: Any) -> None:
    """The closed loop's subcommands, on the CLI's subparsers."""
    ev = sub.add_parser("evaluate", help="score parameters on a repository's git history")
    ev.add_argument("--repo", type=Path, required=True, help="a git repository")
    src = ev.add_mutually_exclusive_group()
    src.add_argument("--params", type=Path, help="parameters JSON (default: ripmap's defaults)")
    src.add_argument("--version", type=int, help="a parameter version of the service")
    ev.add_argument("--cases", choices=["both", "tuning", "heldout", "all"], default="both")
    ev.add_argument("--failures-out", type=Path, help="write the failing cases here (JSONL)")
    ev.add_argument("--no-sensitivity", action="store_true",
                    help="skip the one-parameter-at-a-time effects")
    ev.add_argument("--json", action="store_true", help="deterministic JSON on stdout")
    ev.set_defaults(func=cmd_evaluate)
    rp = sub.add_parser("repo", help="repositories every new version is evaluated on")
    rp.add_argument("action", choices=["add", "list", "remove"])
    rp.add_argument("target", nargs="?", help="add: a path; remove: a name")
    rp.add_argument("--name", help="add: the name (default: the directory's)")
    rp.add_argument("--follow-head", action="store_true",
                    help="add: score on the newest history instead of pinning the commit "
                    "(scores of different commits rank different cases)")
    rp.set_defaults(func=cmd_repo)
    tu = sub.add_parser("tune", help="the closed loop on one repository")
    tu.add_argument("--repo", type=Path, required=True)
    tu.add_argument("--name", help="the registered name (default: the directory's)")
    tu.add_argument("--evaluations", type=int, default=10, help="versions to evaluate")
    tu.add_argument("--output", type=Path, default=Path("best_params.json"))
    tu.add_argument("--stall-seconds", type=float, default=120.0,
                    help="stop when no evaluation lands for this long")
    tu.add_argument("--from", dest="start", choices=["recommended", "defaults"],
                    default="recommended",
                    help="start from the preset recommended for the repository when one "
                    "matches (default), or from the current version as it is")
    tu.set_defaults(func=cmd_tune)
    for p in (ev, rp, tu):
        p.add_argument("--window", type=int, default=2000,
                       help="commits of history that give the cases")
