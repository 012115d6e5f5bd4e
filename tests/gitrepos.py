"""Real git repositories for the ranker's tests, built with the git CLI at fixed dates."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

EPOCH = 1_700_000_000  # fixed author/committer time of the first commit
DAY = 86_400


def git(repo: Path, *args: str, when: int = EPOCH) -> str:
    """Run git in ``repo`` with a fixed identity and date; returns stdout."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_AUTHOR_DATE": f"@{when} +0000", "GIT_COMMITTER_DATE": f"@{when} +0000",
        "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_SYSTEM": os.devnull,
    }
    done = subprocess.run(["git", "-C", str(repo), *args], env=env, check=True,
                          capture_output=True, text=True)
    return done.stdout


def init(repo: Path) -> Path:
    """An empty repository on branch main."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    return repo


def commit(repo: Path, subject: str, files: dict[str, str | bytes], when: int,
           delete: Sequence[str] = ()) -> str:
    """Write ``files``, delete ``delete``, commit everything at time ``when``; the new sha."""
    for path, content in files.items():
        target = repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    for path in delete:
        (repo / path).unlink()
    git(repo, "add", "-A", when=when)
    git(repo, "commit", "-q", "--allow-empty", "-m", subject, when=when)
    return git(repo, "rev-parse", "HEAD").strip()


# path -> (definitions, calls); Python unless the suffix says otherwise
SOURCES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "app.py": (("main",), ("run_engine", "parse_config", "render_page")),
    "targets.py": (("build_targets",), ("parse_config",)),
    "src/pkg/core.py": (("Engine", "run_engine"), ("load_data", "validate_input", "Cache",
                                                    "plugin_hook")),
    "src/pkg/util.py": (("parse_config", "load_data"), ("read_bytes",)),
    "src/pkg/validate.py": (("validate_input",), ("escape_html",)),
    "src/pkg/cache.py": (("Cache",), ("checksum",)),
    "src/pkg/plugins/alpha.py": (("plugin_hook",), ()),
    "src/pkg/plugins/beta.py": (("plugin_hook",), ()),
    "src/pkg/io/reader.py": (("read_bytes",), ("decode_stream",)),
    "src/pkg/io/codec/stream.py": (("decode_stream",), ("deep_helper",)),
    "src/pkg/io/codec/impl/fast/deep.py": (("deep_helper", "DeepThing"), ("checksum",)),
    "src/pkg/io/codec/impl/fast/crc.py": (("checksum",), ()),
    "src/pkg/web/views.py": (("render_page", "View"), ("run_engine", "escape_html")),
    "vendor/markup/escape.py": (("escape_html", "Markup"), ("checksum",)),
    "vendor/markup/tables.py": (("markup_table",), ("escape_html",)),
    "tests/test_core.py": (("test_engine",), ("run_engine", "Engine")),
    "tests/test_util.py": (("test_parse",), ("parse_config", "load_data")),
    "tests/test_views.py": (("test_render",), ("render_page", "View")),
}
# (subject, files changed) — repeated in rounds to give churn, recency and co-change
PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Fix parse_config on empty input", ("src/pkg/util.py", "tests/test_util.py")),
    ("Engine retries in run_engine", ("src/pkg/core.py", "tests/test_core.py")),
    ("Speed up decode_stream for large reads",
     ("src/pkg/io/codec/stream.py", "src/pkg/io/reader.py",
      "src/pkg/io/codec/impl/fast/deep.py")),
    ("views render through escape_html",
     ("src/pkg/web/views.py", "vendor/markup/escape.py", "tests/test_views.py")),
    ("validate_input before Cache writes",
     ("src/pkg/validate.py", "src/pkg/cache.py", "src/pkg/core.py")),
    ("checksum covers DeepThing blocks",
     ("src/pkg/io/codec/impl/fast/crc.py", "src/pkg/io/codec/impl/fast/deep.py",
      "src/pkg/cache.py")),
    ("main wires build_targets", ("app.py", "targets.py", "src/pkg/util.py")),
    ("markup tables for the reader",
     ("vendor/markup/tables.py", "src/pkg/io/reader.py", "src/pkg/web/views.py")),
    ("load_data streams", ("src/pkg/util.py", "src/pkg/io/reader.py", "tests/test_util.py")),
    ("Engine renders pages", ("src/pkg/core.py", "src/pkg/web/views.py", "app.py")),
)
EXTRA_FILES: dict[str, str | bytes] = {
    "README.md": "# fixture\n",
    "docs/guide.md": "guide\n",
    "lib/target/gen.rs": "fn generated() { helper_fn(); }\nfn helper_fn() {}\n",
    "web/main.js": "function start() { boot(); }\nfunction boot() {}\n",
    "src/pkg/blob.py": b"\x00\x01binary",
}


def python_source(defs: Sequence[str], calls: Sequence[str], revision: int) -> str:
    """A Python file defining ``defs`` (classes when capitalised) that calls ``calls``."""
    lines = [f"# revision {revision}"]
    for name in defs:
        if name[0].isupper():
            lines += [f"class {name}:", "    pass", ""]
        else:
            body = "; ".join(f"{c}()" for c in calls) or "pass"
            lines += [f"def {name}():", f"    {body}", ""]
    if not any(not d[0].isupper() for d in defs):
        lines += ["def _module_calls():", "    " + ("; ".join(f"{c}()" for c in calls) or "pass")]
    return "\n".join(lines) + "\n"


@dataclass
class Plan:
    """A fixture history: the initial files, then PATTERNS in ``rounds`` rounds."""

    rounds: int = 5
    spacing_days: float = 1.5
    overrides: dict[int, tuple[str, tuple[str, ...]]] = field(default_factory=dict)

    def commits(self) -> list[tuple[str, tuple[str, ...]]]:
        """(subject, files) of every commit after the initial one."""
        plan = [PATTERNS[i % len(PATTERNS)] for i in range(self.rounds * len(PATTERNS))]
        for i, replacement in self.overrides.items():
            plan[i] = replacement
        return plan


def build_fixture(repo: Path, plan: Plan | None = None) -> Path:
    """The main fixture: vendored and deep files, churn, coupling, mentioned identifiers,
    multi-hop references, two identical files (ties), an untagged doc and a binary .py."""
    plan = plan or Plan()
    init(repo)
    initial: dict[str, str | bytes] = {p: python_source(d, c, 0) for p, (d, c) in SOURCES.items()}
    commit(repo, "Initial import", {**initial, **EXTRA_FILES}, EPOCH)
    for n, (subject, files) in enumerate(plan.commits(), 1):
        changed: dict[str, str | bytes] = {p: python_source(*SOURCES[p], n) for p in files}
        commit(repo, subject, changed, EPOCH + int(n * plan.spacing_days * DAY))
    return repo


def add_commit(repo: Path, subject: str, files: Sequence[str], revision: int) -> str:
    """One more commit touching ``files`` of SOURCES at a later date."""
    changed: dict[str, str | bytes] = {p: python_source(*SOURCES[p], revision) for p in files}
    return commit(repo, subject, changed, EPOCH + revision * 2 * DAY)
