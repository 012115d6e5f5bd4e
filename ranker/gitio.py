"""Reading a git repository with few processes: one log, one ls-tree, one cat-file."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ranker.errors import RepositoryError

EMPTY_BLOB = "0" * 40
_FORMAT = "%x01%H%x1f%T%x1f%P%x1f%ct%x1f%s"


@dataclass(frozen=True)
class Change:
    """One file of a commit's first-parent diff: status letter, old path/blob, new path/blob.

    ``old_path`` is None for additions and ``new_path`` None for deletions; a rename has both.
    """

    status: str
    old_path: str | None
    new_path: str | None
    new_blob: str
    new_mode: str


@dataclass(frozen=True)
class Commit:
    """A first-parent commit with its diff against its first parent."""

    sha: str
    tree: str
    parents: tuple[str, ...]
    time: int
    subject: str
    changes: tuple[Change, ...]


def git(repo: Path, *args: str) -> bytes:
    """Run one git command in ``repo`` and return its stdout (RepositoryError on failure)."""
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, check=False
    )
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip()
        raise RepositoryError(f"git {args[0]} failed in {repo}: {message}")
    return done.stdout


def head(repo: Path, rev: str = "HEAD") -> str:
    """The commit id ``rev`` (HEAD by default) names, or RepositoryError when ``repo`` is no
    git repository with commits, or has no such commit."""
    if not repo.is_dir():
        raise RepositoryError(f"{repo} is not a git repository: no such directory")
    done = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", "-q", f"{rev}^{{commit}}"],
        capture_output=True, check=False,
    )
    if done.returncode != 0:
        if rev != "HEAD" and head(repo):
            raise RepositoryError(f"{repo} has no commit {rev}")
        raise RepositoryError(f"{repo} is not a git repository (or has no commits)")
    return done.stdout.decode().strip()


def _changes(tokens: list[str]) -> Iterator[Change]:
    """Parse ``--raw -z`` entries: ``:oldmode newmode old new STATUS\\0path[\\0path]``."""
    i = 0
    while i < len(tokens):
        meta = tokens[i].lstrip("\n").split()
        status = meta[4][0]
        paths = tokens[i + 1 : i + (3 if status in "RC" else 2)]
        i += 1 + len(paths)
        old = None if status == "A" else paths[0]
        new = None if status == "D" else paths[-1]
        yield Change(status, old, new, meta[3], meta[1])


def _commit(chunk: str) -> Commit:
    header, _, rest = chunk.partition("\0")
    sha, tree, parents, time, subject = header.split("\x1f", 4)
    tokens = [t for t in rest.split("\0") if t.strip("\n")]
    return Commit(sha, tree, tuple(parents.split()), int(time), subject, tuple(_changes(tokens)))


def first_parent_log(repo: Path, count: int, rev: str = "HEAD") -> list[Commit]:
    """The last ``count`` first-parent commits up to ``rev``, oldest first, each with its
    first-parent diff."""
    out = git(
        repo, "-c", "core.quotePath=false", "log", "--first-parent", f"-n{count}", "--raw",
        "--no-abbrev", "-M", "--diff-merges=first-parent", "-z", f"--format={_FORMAT}", rev,
    )
    chunks = out.decode("utf-8", "surrogateescape").split("\x01")
    return [_commit(chunk) for chunk in reversed(chunks) if chunk.strip()]


def tree_files(repo: Path, treeish: str) -> dict[str, str]:
    """``{path: blob}`` of the regular files (no symlinks, no submodules) in a tree."""
    out = git(repo, "ls-tree", "-r", "-z", "--full-tree", treeish)
    files: dict[str, str] = {}
    for entry in out.decode("utf-8", "surrogateescape").split("\0"):
        meta, _, path = entry.partition("\t")
        if meta and meta.split()[0] in ("100644", "100755"):
            files[path] = meta.split()[2]
    return files


def read_blobs(repo: Path, blobs: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """``(blob, content)`` for each blob id, through one ``git cat-file --batch`` process."""
    wanted = list(blobs)
    proc = subprocess.Popen(
        ["git", "-C", str(repo), "cat-file", "--batch"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    # Feeding all ids first could deadlock on a full stdout pipe; a writer thread avoids it.
    def feed() -> None:
        assert proc.stdin is not None
        proc.stdin.write("".join(f"{b}\n" for b in wanted).encode())
        proc.stdin.close()

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        for blob in wanted:
            header = proc.stdout.readline().split()
            if len(header) < 3:
                yield blob, b""
                continue
            data = proc.stdout.read(int(header[2]))
            proc.stdout.read(1)
            yield blob, data
    finally:
        writer.join()
        proc.stdout.close()
        proc.wait()
