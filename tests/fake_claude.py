"""A fake ``claude`` command line for tests: answers, fails, hangs or prints garbage.

``fake_claude(folder)`` writes it and returns a PATH that finds it first; what it does is
set by environment variables the worker passes on to it:

- ``FAKE_CLAUDE_DELAY``: wait up to this many seconds (uniform) before answering
- ``FAKE_CLAUDE_FAULTS``: the share of calls that fail (exit 1), hang or print garbage
- ``FAKE_CLAUDE_LOG``: append each call's outcome (ok, error, hang, garbage) to this file
- ``FAKE_CLAUDE_ONCE``: a path; the first call answers (and creates it), later ones fail
- ``FAKE_CLAUDE_LEAK``: fail, printing the API key and Redis URL it was given to stderr
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from schemas.params import PARAM_NAMES, PARAM_SPECS

FAKE_CLAUDE = r'''
import json, os, random, sys, time

PARAMS = __PARAMS__
DEFAULTS = __DEFAULTS__
rng = random.Random()
prompt = sys.argv[-1] if len(sys.argv) > 1 else ""
distilling = "presets (list of" in prompt


def note(what):
    path = os.environ.get("FAKE_CLAUDE_LOG")
    if path:
        with open(path, "a") as f:
            f.write(what + "\n")


def answer():
    lines = []
    # half the voters push pagerank_alpha hard toward its ceiling: bounds must hold
    if rng.random() < 0.5:
        lines.append('pagerank_alpha: increase large "personalisation drowns structure"')
    if rng.random() < 0.3:
        lines.append('depth_weight_vendor: decrease large "vendored files win"')
    for p in rng.sample(PARAMS, rng.randint(0, 2)):
        lines.append("%s: %s %s \"r\"" % (p, rng.choice(["increase", "decrease"]),
                                          rng.choice(["small", "medium", "large"])))
    return "\n".join([
        "## Diagnosis", "the seed dominates",
        "## Parameter Interactions", "- " + rng.choice(["alpha x chat boost", "decay x hops",
                                                       "vendor x depth"]),
        "## Proposed Changes", *lines,
        "## Structural Insights", "- " + rng.choice(["tests sit next to code", "monorepo",
                                                    "flat layout", "deep nesting"]),
        "## Confidence", "%.2f" % rng.uniform(0.2, 0.95)])


def wisdom():
    preset = {"name": "default", "params": DEFAULTS, "when_to_use": "always"}
    return "JSON: " + json.dumps({"presets": [preset], "heuristics": [], "warnings": ["w"],
                                  "intuitions": "fake"})


GARBAGE = [
    lambda: sys.stdout.buffer.write(b"\xff\xfe not utf-8 \xc3\x28\n"),
    lambda: print(""),
    lambda: print("I cannot help with that."),
    lambda: print('JSON: {"proposed_changes": [{"param": "pagerank_alpha", "direction": "up",'
                  ' "magnitude": "huge"}], "confidence": NaN}'),
    lambda: print('JSON: {"confidence": 1e999, "proposed_changes": [{"param": "nope", '
                  '"direction": "increase"}]}'),
    lambda: print("## Proposed Changes\npagerank_alpha: increase large\n" * 40
                  + "## Confidence\n250%"),
    lambda: print("JSON: " + '{"a": ' * 5000 + "1" + "}" * 5000),  # deeper than json allows
    lambda: print("{" * 1500),
    lambda: print("## Confidence\n-3\n## Proposed Changes\nfocus_decay: decrease large "
                  + "x" * 100_000),
    lambda: print('JSON: {"presets": [{"name": "p", "params": {"pagerank_alpha": 7}, '
                  '"when_to_use": "x"}], "intuitions": 5}'),
]

time.sleep(rng.uniform(0, float(os.environ.get("FAKE_CLAUDE_DELAY", "0"))))
if os.environ.get("FAKE_CLAUDE_LEAK"):  # a CLI that prints its environment when it fails
    sys.stderr.write("auth failed: key=%s redis=%s\n" % (
        os.environ.get("ANTHROPIC_API_KEY"), os.environ.get("RIPMAP_REDIS_URL")))
    sys.exit(1)
once = os.environ.get("FAKE_CLAUDE_ONCE")  # answer the first call, fail every later one
if once:
    try:
        os.close(os.open(once, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        note("error")
        sys.stderr.write("fake claude: failing after the first call\n")
        sys.exit(1)
if rng.random() < float(os.environ.get("FAKE_CLAUDE_FAULTS", "0")):
    kind = rng.choice(["error", "hang", "garbage"])
    note(kind)
    if kind == "error":
        sys.stderr.write("fake claude: API error 529 overloaded\n")
        sys.exit(1)
    if kind == "hang":
        os.execvp("sleep", ["sleep", "60"])
    rng.choice(GARBAGE)()
    sys.exit(0)
note("ok")
print(wisdom() if distilling else answer())
'''


def fake_claude(folder: Path) -> str:
    """Write the fake ``claude`` into ``folder``; returns a PATH that finds it first."""
    folder.mkdir(parents=True, exist_ok=True)
    defaults = {name: spec.default for name, spec in PARAM_SPECS.items()}
    source = FAKE_CLAUDE.replace("__PARAMS__", repr(list(PARAM_NAMES))).replace(
        "__DEFAULTS__", repr(defaults))
    script = folder / "claude"
    script.write_text(f"#!{sys.executable} -S\n{source}")
    script.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
