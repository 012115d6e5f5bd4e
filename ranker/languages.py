"""Which files have a grammar, and the grammar's tags query."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import PurePosixPath

import tree_sitter
import tree_sitter_go
import tree_sitter_javascript
import tree_sitter_python
import tree_sitter_rust
import tree_sitter_typescript

EXTENSIONS: dict[str, str] = {
    ".py": "python",
    ".pyi": "python",
    ".rs": "rust",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
}


def language_of(path: str) -> str | None:
    """The grammar name for a repo-relative path, or None when no grammar covers it."""
    return EXTENSIONS.get(PurePosixPath(path).suffix.lower())


def _typescript_tags() -> str:
    # The typescript wheel's tags.scm holds only TypeScript-specific patterns
    # (signatures, interfaces, abstract classes); classes, functions and calls come
    # from the JavaScript query, whose node types the TypeScript grammar shares.
    return str(tree_sitter_typescript.TAGS_QUERY) + "\n" + tree_sitter_javascript.TAGS_QUERY


@cache
def grammar(name: str) -> tuple[tree_sitter.Parser, tree_sitter.Query]:
    """A parser and the compiled tags query for one grammar (built once per process)."""
    sources: dict[str, tuple[Callable[[], object], Callable[[], str]]] = {
        "python": (tree_sitter_python.language, lambda: tree_sitter_python.TAGS_QUERY),
        "rust": (tree_sitter_rust.language, lambda: tree_sitter_rust.TAGS_QUERY),
        "javascript": (tree_sitter_javascript.language, lambda: tree_sitter_javascript.TAGS_QUERY),
        "typescript": (tree_sitter_typescript.language_typescript, _typescript_tags),
        "tsx": (tree_sitter_typescript.language_tsx, _typescript_tags),
        "go": (tree_sitter_go.language, lambda: tree_sitter_go.TAGS_QUERY),
    }
    make_language, query_text = sources[name]
    language = tree_sitter.Language(make_language())
    return tree_sitter.Parser(language), tree_sitter.Query(language, query_text())
