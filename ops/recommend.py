"""``recommend --repo PATH``: the measured preset for a repository, before its first evaluation.

Computes the repository's features from its ranker index (``ranker.features``), picks the
latest wisdom's matching preset (``schemas.wisdom.recommend``: among the presets whose
condition holds, the one learned on the repository nearest in features), prints why, the
expected effect and the evidence, and writes ripmap's ``params.json``. Exit 2 for a path
that is no usable git repository, 1 while no measured preset exists; nothing is written
in either case, nor when no preset matches.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ops import embedded, loop
from ranker import RepositoryError
from ranker.features import repository_features
from ranker.gitio import head
from schemas.features import FEATURE_NOTES
from schemas.settings import Settings
from schemas.wisdom import Recommendation, Wisdom, recommend
from state import store

out = Console()
err = Console(stderr=True)
NO_PRESET = 1


def cmd_recommend(args: argparse.Namespace, settings: Settings) -> int:
    """Recommend a measured preset for a repository and write it as params.json."""
    try:
        head(args.repo)
    except RepositoryError as exc:
        return _usage(str(exc))
    with embedded.service(settings, workers=False) as live:
        wisdom = store.latest_wisdom(store.connect(live.state_url))
    if wisdom is None or not any(p.condition is not None and p.evidence for p in wisdom.presets):
        err.print("[bold red]no preset yet:[/] no distillation has measured presets (register "
                  "repositories and let the loop evaluate versions: `tune --repo`, then "
                  "`distill`); nothing was written", highlight=False)
        return NO_PRESET
    try:
        repo = loop.open_repo(args.repo, settings, args.window)
    except loop.BadInput as exc:
        return _usage(str(exc))
    rec = recommend(list(wisdom.presets), repository_features(repo), wisdom.version)
    assert rec is not None  # a measured preset exists
    if args.json:
        sys.stdout.write(json.dumps(report(rec), indent=2, sort_keys=True) + "\n")
    else:
        print_recommendation(rec, repo.name, wisdom)
    if rec.matched and rec.preset is not None and args.output is not None:
        args.output.write_text(json.dumps(rec.preset.params.as_floats(), indent=2) + "\n")
        err.print(f"preset {rec.preset.name} written to {args.output}", highlight=False)
    elif not rec.matched:
        err.print("nothing was written: keep the defaults (or `tune --repo` to learn)",
                  highlight=False)
    return 0


def _usage(message: str) -> int:
    err.print(f"[bold red]error:[/] {message} (nothing was written)", highlight=False)
    return loop.USAGE_ERROR


def report(rec: Recommendation) -> dict[str, Any]:
    """``recommend --json``: the recommendation with the preset's parameters flat."""
    data: dict[str, Any] = rec.model_dump(mode="json")
    data["params"] = rec.preset.params.as_floats() if rec.preset is not None else None
    return data


def print_recommendation(rec: Recommendation, name: str, wisdom: Wisdom | None = None) -> None:
    """Features, the choice and its reason, expected effect and evidence."""
    features = rec.features
    table = Table(title=f"{name}: features (history from the tuning side only)")
    table.add_column("feature")
    table.add_column("value")
    table.add_column("meaning")
    langs = ", ".join(f"{k} {v:.0%}" for k, v in sorted(features.languages.items(),
                                                        key=lambda kv: (-kv[1], kv[0])))
    table.add_row("languages", langs or "none", f"dominant: {features.dominant_language}")
    for feature, note in FEATURE_NOTES.items():
        table.add_row(feature, f"{getattr(features, feature):g}", note)
    out.print(table)
    source = f" (wisdom v{wisdom.version})" if wisdom is not None else ""
    if not rec.matched or rec.preset is None:
        out.print(f"[bold]no preset matches{source}[/]; why, per preset:")
        for preset, reasons in rec.considered.items():
            out.print(f"  - {preset}: {'; '.join(reasons)}", highlight=False)
        return
    out.print(f"[bold]recommended: {rec.preset.name}[/]{source}", highlight=False)
    out.print(f"why: {rec.reason}", highlight=False)
    if rec.expected_effect is not None:
        out.print(f"expected effect: {rec.expected_effect:+.4f} held-out NDCG@10 (mean where it "
                  "was learned; chosen on tuning scores only)", highlight=False)
    for preset, reasons in rec.considered.items():
        if reasons:
            out.print(f"not {preset}: {'; '.join(reasons)}", highlight=False)
    evidence = Table(title="evidence (effects against each repository's baseline version)")
    for col in ("repository", "version", "baseline", "role", "tuning Δ", "held-out Δ",
                "held-out commits"):
        evidence.add_column(col)
    for e in rec.preset.evidence:
        evidence.add_row(e.repo, f"v{e.version}", f"v{e.baseline_version}",
                         "learned" if e.learned_here else "measured", f"{e.tuning_effect:+.4f}",
                         f"{e.heldout_effect:+.4f}", str(e.heldout_commits))
    out.print(evidence)


def add_parsers(sub: Any) -> None:
    """``recommend`` on the CLI's subparsers."""
    rc = sub.add_parser("recommend", help="the measured preset for a repository, as params.json")
    rc.add_argument("--repo", type=Path, required=True, help="a git repository")
    rc.add_argument("--output", type=Path, default=Path("params.json"),
                    help="where to write ripmap's params.json (when a preset matches)")
    rc.add_argument("--json", action="store_true", help="the recommendation as JSON on stdout")
    rc.add_argument("--window", type=int, default=2000,
                    help="commits of history that give the cases")
    rc.set_defaults(func=cmd_recommend)
