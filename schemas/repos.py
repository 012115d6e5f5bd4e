"""Repositories the service evaluates every parameter version on, and what it measured."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.limits import MAX_PATH_CHARS, MAX_REPO_NAME_CHARS

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
RepoName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_REPO_NAME_CHARS,
                                            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class RegisteredRepo(BaseModel):
    """A git repository the evaluation workers can read, with its case settings."""

    model_config = _STRICT

    name: RepoName
    path: Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH_CHARS)]
    # the last ``window`` first-parent commits give the cases (oldest 70 % tuning)
    window: Annotated[int, Field(ge=20, le=20_000)] = 2_000
    added_at: float = 0.0
    # the commit the cases come from, pinned at registration so that every version is
    # scored on the same cases ("" follows HEAD: new commits change the cases)
    commit: Annotated[str, StringConstraints(max_length=64)] = ""


class SplitScore(BaseModel):
    """Weighted NDCG@10 of one split with its 95 % commit-bootstrap interval."""

    model_config = _STRICT

    ndcg: Annotated[float, Field(ge=0.0, le=1.0)]
    low: Annotated[float, Field(ge=0.0, le=1.0)]
    high: Annotated[float, Field(ge=0.0, le=1.0)]
    cases: Annotated[int, Field(ge=0)]
    commits: Annotated[int, Field(ge=0)]


class RepoEvaluation(BaseModel):
    """One version scored on one registered repository by the reference ranker.

    ``tuning`` feeds best and rollback; ``heldout`` is for reporting only.
    """

    model_config = _STRICT

    version: Annotated[int, Field(ge=0)]
    repo: RepoName
    tuning: SplitScore
    heldout: SplitScore
    failures_pushed: Annotated[int, Field(ge=0)] = 0
    verdict: str = ""
    seconds: Annotated[float, Field(ge=0.0)] = 0.0
    finished_at: float = 0.0
    # the commit the cases came from: scores of different commits rank different cases
    head: Annotated[str, StringConstraints(max_length=64)] = ""


class EvaluateRequest(BaseModel):
    """The argument of ``ripmap.evaluate_version``: one version on one repository."""

    model_config = _STRICT

    version: Annotated[int, Field(ge=0)]
    repo: RepoName
