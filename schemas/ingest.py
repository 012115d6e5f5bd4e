"""What the streaming push and the HTTP API answer: receipts and problems."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PushState = Literal["buffered", "enqueued", "pending"]


class PushReceipt(BaseModel):
    """Where one pushed failure went.

    ``buffered``: waiting in its repository's buffer at ``position`` (1-based) for a full
    batch or the flusher. ``enqueued``: its batch ``batch_id`` was enqueued. ``pending``:
    its batch was taken but the enqueue failed; the flusher re-sends it.
    """

    model_config = ConfigDict(frozen=True)

    repo: str
    state: PushState
    batch_id: str | None = None
    position: int | None = None


class PushResponse(BaseModel):
    """The answer to ``POST /v1/failures``: one receipt per failure, in request order."""

    model_config = ConfigDict(frozen=True)

    accepted: int
    batches: list[str] = Field(description="ids of the batches this request filled")
    failures: list[PushReceipt]


class Problem(BaseModel):
    """One reason input was rejected, with the JSON path of the offending value."""

    model_config = ConfigDict(frozen=True)

    path: str = Field(description="JSON path in the request body, e.g. $[2].ndcg")
    loc: list[str | int] = Field(description="the same path as a FastAPI-style location")
    msg: str
    type: str


class ProblemResponse(BaseModel):
    """The body of every 4xx answer about bad input (nothing of the request was accepted)."""

    model_config = ConfigDict(frozen=True)

    detail: list[Problem]
