"""The reducer's drain: merge what waits in the inbox (``state.inbox``) until it is empty.

The merge task runs this; see ``state.inbox`` for the flag protocol and its races.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, cast

import redis
from pydantic import ValidationError

from schemas.episode import ReasoningEpisode
from schemas.errors import describe
from schemas.settings import Settings
from schemas.tasks import MERGE_INSIGHTS
from state import deadletters, keys, scripts
from state.inbox import FLAG_TTL
from worker import reducer

CHUNK = 100  # episodes a drain reads per round trip
MAX_SECONDS = 20.0  # one drain task's time; then it hands over to a new task


@dataclass
class DrainReport:
    """What one drain did; ``more`` when it handed the rest over to a new drain task."""

    merged: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    more: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The report as the drain task's JSON result."""
        return {"merged": self.merged, "duplicates": self.duplicates,
                "dead_lettered": self.dead_lettered, "more": self.more}


def drain(client: redis.Redis, settings: Settings, seconds: float = MAX_SECONDS
          ) -> DrainReport:
    """Merge what waits in the inbox until it is empty, or hand over after ``seconds``."""
    report, deadline = DrainReport(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        flat = cast(list[str], client.hrandfield(keys.INBOX, CHUNK, withvalues=True))
        if not flat:
            if scripts.inbox_done(client, FLAG_TTL):
                return report
            continue
        for episode_id, raw in zip(flat[::2], flat[1::2], strict=True):
            _merge_one(client, settings, episode_id, raw, report)
        client.expire(keys.INBOX_DRAINING, FLAG_TTL)
    report.more = True
    return report


def _merge_one(client: redis.Redis, settings: Settings, episode_id: str, raw: str,
               report: DrainReport) -> None:
    try:
        episode = ReasoningEpisode.model_validate_json(raw)
    except ValidationError as exc:  # only if the contract changed under the inbox
        deadletters.add(client, MERGE_INSIGHTS, _payload(raw),
                        "invalid episode: " + "; ".join(describe(exc)), letter_id=episode_id)
        client.hdel(keys.INBOX, episode_id)
        report.dead_lettered += 1
        return
    if reducer.merge(client, episode, settings):
        report.merged += 1
    else:
        report.duplicates += 1


def _payload(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw
