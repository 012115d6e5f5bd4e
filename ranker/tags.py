"""Definitions and references of one file, from the grammar wheels' tags queries."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import tree_sitter

from ranker.languages import grammar

MAX_FILE_BYTES = 1_000_000
DEFINITION_KINDS = frozenset({"class", "function", "method", "interface", "module", "macro"})
REFERENCE_KINDS = frozenset({"call", "class", "implementation"})


@dataclass(frozen=True)
class Tags:
    """Names a file defines (sorted, unique) and names it references, with counts."""

    definitions: tuple[str, ...]
    references: tuple[tuple[str, int], ...]


def is_skipped(data: bytes) -> bool:
    """True for files the ranker does not parse: over the size cap, or binary (a NUL byte)."""
    return len(data) > MAX_FILE_BYTES or b"\0" in data[:8000]


def _kind(captures: dict[str, list[tree_sitter.Node]]) -> tuple[str, str] | None:
    """("definition"|"reference", kind) of one match, when it is a kind ripmap keeps."""
    for capture in captures:
        role, _, kind = capture.partition(".")
        if role == "definition" and kind in DEFINITION_KINDS:
            return role, kind
        if role == "reference" and kind in REFERENCE_KINDS:
            return role, kind
    return None


def extract_tags(data: bytes, language: str) -> Tags:
    """Tags of one file: each query match pairs its ``@name`` with the enclosing kind."""
    parser, query = grammar(language)
    tree = parser.parse(data)
    definitions: set[str] = set()
    references: Counter[str] = Counter()
    for _, captures in tree_sitter.QueryCursor(query).matches(tree.root_node):
        role_kind = _kind(captures)
        for node in captures.get("name", ()) if role_kind else ():
            name = (node.text or b"").decode("utf-8", "replace")
            if len(name) < 2:
                continue
            if role_kind and role_kind[0] == "definition":
                definitions.add(name)
            else:
                references[name] += 1
    return Tags(tuple(sorted(definitions)), tuple(sorted(references.items())))
