"""Reading failure records from JSON or JSONL text, with errors that say where."""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from producer.api import InvalidInput

MAX_INPUT_BYTES = 64 * 1024 * 1024


def read_records(source: str, text: str | None = None) -> list[Any]:
    """Records from a file path or ``-`` (stdin): a JSON list, one object, or JSONL."""
    if text is None:
        text = _read_text(source)
    stripped = text.strip()
    if not stripped:
        raise InvalidInput([f"{source}: no failures given (empty input)"])
    if stripped.startswith("["):
        return _json_list(stripped, source)
    whole = _whole_object(stripped)
    if whole is not None:
        return whole
    return _jsonl(stripped, source)


def sample_failures() -> list[Any]:
    """The bundled sample failures the ``demo`` command runs."""
    text = resources.files("ops").joinpath("data/sample_failures.json").read_text()
    return list(json.loads(text))


def _read_text(source: str) -> str:
    """At most MAX_INPUT_BYTES bytes (never more is read), decoded as UTF-8."""
    if source == "-":
        raw = getattr(sys.stdin, "buffer", None)  # a text-only stdin (embedding, tests) has none
        data = raw.read(MAX_INPUT_BYTES + 1) if raw else sys.stdin.read(
            MAX_INPUT_BYTES + 1).encode()
    else:
        path = Path(source)
        if not path.is_file():
            raise InvalidInput([f"{source}: no such file"])
        with path.open("rb") as f:
            data = f.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise InvalidInput([f"{source}: input over {MAX_INPUT_BYTES} bytes"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput([f"{source}: not UTF-8 (byte {exc.start}): JSON input must be "
                            "UTF-8"]) from None


def _loads(text: str, where: str) -> Any:
    """``json.loads`` with its failures as InvalidInput naming ``where``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput([f"{where}: malformed JSON at line {exc.lineno}: {exc.msg}"]) from None
    except RecursionError:
        raise InvalidInput([f"{where}: JSON nested too deeply"]) from None


def _json_list(text: str, source: str) -> list[Any]:
    value = _loads(text, source)
    if not isinstance(value, list):
        raise InvalidInput([f"{source}: expected a JSON list of failures"])
    return value


def _whole_object(text: str) -> list[Any] | None:
    """One (possibly pretty-printed) object, or ``{"failures": [...]}``; None if not that."""
    try:
        value = _loads(text, "input")
    except InvalidInput:
        return None
    if isinstance(value, dict) and isinstance(value.get("failures"), list):
        return list(value["failures"])
    return [value]


def _jsonl(text: str, source: str) -> list[Any]:
    records, problems = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(_loads(line, f"{source}: line {lineno}"))
        except InvalidInput as exc:
            problems += exc.problems
    if problems:
        raise InvalidInput(problems)
    return records
