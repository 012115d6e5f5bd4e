"""What both HTTP routers share: the bearer-token check and the request dependencies.

``ops.http`` (the API) and ``ops.http_dashboard`` (the dashboard) both import this module,
so neither imports the other's internals.
"""

from __future__ import annotations

import secrets
from typing import Annotated

import redis
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from producer.push import Pusher
from schemas.settings import Settings

# --- dependencies ----------------------------------------------------------------------
# async although nothing in them waits: FastAPI runs a sync dependency in its thread pool,
# and that hop cost more than the whole push.

bearer = HTTPBearer(
    auto_error=False,
    description="RIPMAP_API_TOKEN. Required when the server has one set (set it in production).",
)


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Reject the request unless it carries the configured bearer token (if one is set)."""
    check_token(request.app.state.settings, credentials.credentials if credentials else "")


def authorize(request: Request) -> None:
    """``require_token`` for a route without dependencies: the bearer token from the
    Authorization header, checked the same way."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    check_token(request.app.state.settings, given.strip() if scheme.lower() == "bearer" else "")


def check_token(settings: Settings, given: str) -> bool:
    """Raise 401 unless ``given`` is the API token; False when auth is off (no token set)."""
    secret = settings.api_token
    # an empty token (e.g. compose's `${RIPMAP_API_TOKEN:-}`) means no auth, like an unset one
    expected = secret.get_secret_value() if secret is not None else ""
    if not expected:
        return False
    if not secrets.compare_digest(given.encode(), expected.encode()):
        reason = "wrong bearer token" if given else "missing bearer token"
        raise HTTPException(401, detail=reason, headers={"WWW-Authenticate": "Bearer"})
    return True


async def _pusher(request: Request) -> Pusher:
    pusher: Pusher = request.app.state.pusher
    return pusher


async def _state(request: Request) -> redis.Redis:
    return (await _pusher(request)).client


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


PusherDep = Annotated[Pusher, Depends(_pusher)]
StateDep = Annotated[redis.Redis, Depends(_state)]
SettingsDep = Annotated[Settings, Depends(_settings)]
