"""The machinery every script module shares: the client type, running a script by its
SHA (loading it on the first miss), the key lists several domains' scripts take, and the
small decoders of script replies."""

from __future__ import annotations

from typing import Any

import redis
from redis.commands.core import Script

from state import keys

Client = redis.Redis | redis.client.Pipeline

LEDGER_KEYS = [keys.OPEN, keys.OPEN_SINCE, keys.OPEN_MISSING]

_INSIGHT_KEYS = [
    k for kind in keys.INSIGHT_KINDS for k in (keys.insights(kind), keys.insight_text(kind))
]

_SCRIPTS: dict[str, Script] = {}


def _run(client: Client, source: str, script_keys: list[str], args: list[Any]) -> Any:
    """EVALSHA ``source`` on ``client``, loading it on the first miss."""
    script = _SCRIPTS.get(source)
    if script is None:
        script = _SCRIPTS[source] = client.register_script(source)
    return script(keys=script_keys, args=args, client=client)


def _pairs(flat: list[Any]) -> list[tuple[str, int]]:
    return [(_text(flat[i]), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pairs_text(flat: list[Any]) -> list[tuple[str, str]]:
    return [(_text(flat[i]), _text(flat[i + 1])) for i in range(0, len(flat), 2)]
