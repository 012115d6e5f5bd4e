"""Ranking failures as ranking services report them, and batches of them."""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from schemas.limits import (
    MAX_COMMIT_MESSAGE_CHARS,
    MAX_FAILURES_PER_BATCH,
    MAX_FILES_PER_LIST,
    MAX_PATH_CHARS,
    MAX_QUERY_CHARS,
    MAX_REPO_NAME_CHARS,
)

Path = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH_CHARS)]
_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_strip_whitespace=True)


class RepoContext(BaseModel):
    """What the ranking service knows of the repository."""

    model_config = _STRICT

    name: Annotated[str, StringConstraints(max_length=MAX_REPO_NAME_CHARS)] = "unknown"
    file_count: Annotated[int, Field(ge=0, le=100_000_000)] | None = None


class RankingFailure(BaseModel):
    """A case where ripmap ranked a commit's co-changed files too low (NDCG@10 < 0.5)."""

    model_config = _STRICT

    query: Annotated[str, StringConstraints(max_length=MAX_QUERY_CHARS)]
    seed_file: Path
    expected_top: Annotated[list[Path], Field(min_length=1, max_length=MAX_FILES_PER_LIST)]
    actual_top: Annotated[list[Path], Field(max_length=MAX_FILES_PER_LIST)]
    ndcg: Annotated[float, Field(ge=0.0, le=1.0)]
    commit_message: Annotated[str, StringConstraints(max_length=MAX_COMMIT_MESSAGE_CHARS)] = ""
    repo_context: RepoContext = Field(default_factory=RepoContext)
    params_version: Annotated[int, Field(ge=0)] | None = None

    @field_validator("ndcg", mode="before")
    @classmethod
    def _ndcg_number(cls, value: object) -> object:
        # bool is an int subclass: `true` must not pass as 1.0
        if isinstance(value, bool):
            raise ValueError("ndcg must be a number, not a boolean")
        return value


class FailureBatch(BaseModel):
    """1..N failures reasoned about together in one episode.

    ``batch_id`` is derived from the content, so the same failures submitted twice are
    one batch.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    failures: Annotated[
        list[RankingFailure], Field(min_length=1, max_length=MAX_FAILURES_PER_BATCH)
    ]

    @cached_property
    def batch_id(self) -> str:
        """Stable content hash of the failures (order matters)."""
        return content_id([f.model_dump(mode="json") for f in self.failures])

    @property
    def repo(self) -> str:
        """The repository of the first failure."""
        return self.failures[0].repo_context.name


def content_id(payload: object) -> str:
    """A short stable id for any JSON-serialisable payload."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]
