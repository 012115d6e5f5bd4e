"""Query tokens: the words of a commit subject that can name an identifier or a file."""

from __future__ import annotations

import re

MIN_TOKEN_CHARS = 3
_STOPWORD_TEXT = """
    the and for with from into onto that this these those when where which while what why how
    not but are was were been being has have had its it's can could should would will shall may
    might must does did doing done all any each every some more most less new old other only
    than then too very also just now via per use uses used using add adds added adding fix
    fixes fixed fixing update updates updated updating remove removes removed removing change
    changes changed changing make makes made making support supports supported supporting
    allow allows allowed allowing test tests tested testing bump merge merged branch pull
    request revert reverts release version docs doc improve improved improves handle handles
    handled set sets get gets move moved moves rename renamed renames refactor refactored
    clean cleanup minor small typo typos instead don't doesn't isn't can't won't rather
    ensure ensures check checks work works working better first second again about after
    before there their them they you your our out off one two way ways same like need
    needs needed call calls called run runs running return returns try tries avoid
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def identifier_parts(word: str) -> list[str]:
    """The snake_case and camelCase parts of an identifier (``getHTTPValue`` → get, HTTP, Value)."""
    return [part for piece in word.split("_") for part in _CAMEL.findall(piece)]


def query_tokens(text: str) -> frozenset[str]:
    """Lower-case tokens of a query: whole identifiers plus their parts, minus stopwords.

    A token has at least ``MIN_TOKEN_CHARS`` characters and is no function word or
    generic verb: without the stopwords most commits "mention" some generic name.
    """
    tokens: set[str] = set()
    for word in _WORD.findall(text):
        tokens.add(word.lower())
        tokens.update(part.lower() for part in identifier_parts(word))
    return frozenset(t for t in tokens if len(t) >= MIN_TOKEN_CHARS and t not in STOPWORDS)
