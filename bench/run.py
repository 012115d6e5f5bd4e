"""``python -m bench.run [--quick] [--only NAME,...]``: run the benchmarks, write BENCHMARKS.md.

Each benchmark's section sits between ``<!-- bench:NAME -->`` markers, so ``--only``
replaces just its own sections and keeps the others from an earlier full run.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import sys
import time
import traceback
from pathlib import Path

from bench.common import Options, machine_info, table
from tests.services import ROOT

# name -> module (its run(opts)) or module:function, in report order
BENCHMARKS = {
    "overhead": "bench.overhead",
    "scratchpad": "bench.scratchpad",
    "prompts": "bench.prompts",
    "commands": "bench.commands",
    "llm": "bench.llm_scaling",
    "ingestion": "bench.ingestion",
    "ranker": "bench.corpora:ranker",
    "headtohead": "bench.corpora:headtohead",
    "transfer": "bench.corpora:transfer",
}
OUT = ROOT / "BENCHMARKS.md"
# hand-written findings (profiles, experiments, proposals), appended after the tables
ANALYSIS = Path(__file__).with_name("analysis.md")
TITLE = "# Benchmarks"
INTRO = """Produced by `make bench` (`.venv/bin/python -m bench.run`; `--quick` for a shorter run,
`--only NAME,...` for some sections). Every benchmark starts its own private redis-server and
real Celery worker processes; figures are medians with min–max over the stated runs, and
ratios compare with a baseline measured in the same run, because the machine is shared
(other jobs run tests concurrently on the same 2 cores): absolute rates move between runs,
ratios much less. The test suite has no timing assertions; speed lives here."""


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks; returns the exit status."""
    args = _parser().parse_args(argv)
    names = list(BENCHMARKS) if not args.only else args.only.split(",")
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}",
              file=sys.stderr)
        return 2
    command = " ".join([".venv/bin/python -m bench.run", *map(shlex.quote, argv or sys.argv[1:])])
    opts = Options(quick=args.quick, command=command.strip())
    sections = {}
    failed = False
    for name in names:
        started = time.monotonic()
        print(f"== {name} ...", flush=True)
        try:
            module, _, function = BENCHMARKS[name].partition(":")
            sections[name] = getattr(importlib.import_module(module), function or "run")(opts)
        except Exception:
            failed = True
            detail = traceback.format_exc()
            print(detail, file=sys.stderr)
            sections[name] = f"## {name}\n\nCommand: `{command}`\n\nFailed:\n\n```\n{detail}```"
        print(sections[name], flush=True)
        print(f"== {name} took {time.monotonic() - started:.0f}s", flush=True)
    write(args.out, sections)
    print(f"wrote {args.out}")
    return 1 if failed else 0


def write(path: Path, sections: dict[str, str]) -> None:
    """Replace (or add) the given sections, refresh the machine table, keep the rest."""
    old = path.read_text() if path.exists() else ""
    kept = {m.group(1): m.group(2) for m in
            re.finditer(r"<!-- bench:(\w+) -->\n(.*?)\n<!-- /bench:\1 -->", old, re.S)}
    kept.update(sections)
    machine = table(["", ""], machine_info())
    body = [TITLE, INTRO, "## Machine and versions (of the latest run)", machine]
    body += [f"<!-- bench:{n} -->\n{kept[n]}\n<!-- /bench:{n} -->" for n in BENCHMARKS
             if n in kept]
    if ANALYSIS.exists():
        body.append(ANALYSIS.read_text().strip())
    path.write_text("\n\n".join(body) + "\n")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer episodes and runs (~3 min)")
    p.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    p.add_argument("--out", type=Path, default=OUT, help="the markdown file to write")
    return p


if __name__ == "__main__":
    sys.exit(main())
