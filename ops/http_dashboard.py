"""The live dashboard on the HTTP API: ``/dashboard`` and its data, behind the API's token.

A browser can't add a bearer header when it opens a page, so here the token may also come
as ``?token=``; the page passes it on to its data requests.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.security import HTTPAuthorizationCredentials

from ops import dashboard
from ops.http_deps import SettingsDep, StateDep, bearer, check_token
from schemas.dashboard import Dashboard

router = APIRouter(tags=["dashboard"])
TokenQuery = Annotated[str | None, Query(description="the API token, for browsers")]


def require_token_or_query(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    token: TokenQuery = None,
) -> str:
    """The API's bearer-token check, also accepting ``?token=``; returns the token given."""
    given = credentials.credentials if credentials is not None else (token or "")
    return given if check_token(request.app.state.settings, given) else ""


Authorized = Annotated[str, Depends(require_token_or_query)]


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard_page(token: Authorized) -> HTMLResponse:
    """The one-page dashboard; it polls ``/v1/dashboard/data`` every 5 seconds."""
    return HTMLResponse(dashboard.render(None, live=True, token=token))


@router.get("/dashboard/static/chart.umd.min.js", include_in_schema=False)
def chart_library(_: Authorized) -> Response:
    """Chart.js, vendored (MIT licence): the dashboard needs no network."""
    js = resources.files("ops").joinpath("static/chart.umd.min.js").read_text()
    return Response(js, media_type="text/javascript",
                    headers={"Cache-Control": "public, max-age=86400"})


@router.get("/v1/dashboard/data")
def dashboard_data(_: Authorized, state: StateDep, settings: SettingsDep) -> Dashboard:
    """Everything the dashboard draws, as JSON."""
    return dashboard.collect(state, settings)
