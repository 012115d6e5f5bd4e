"""The live dashboard on the HTTP API: ``/dashboard`` and its data, behind the API's token.

A browser can't add a bearer header when it opens a page, so here the token may also come
as ``?token=``; the page passes it on to its data requests.

Every response carries the dashboard's Content-Security-Policy (``dashboard.CSP``: only its
own scripts, style sheet, images and data requests), and no referrer: the page's URL may
hold the token.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
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


SECURITY_HEADERS = {"Content-Security-Policy": dashboard.CSP, "Referrer-Policy": "no-referrer",
                    "X-Content-Type-Options": "nosniff"}


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard_page(token: Authorized) -> HTMLResponse:
    """The one-page dashboard; it polls ``/v1/dashboard/data`` every 5 seconds."""
    return HTMLResponse(dashboard.render(None, live=True, token=token),
                        headers=SECURITY_HEADERS)


@router.get("/dashboard/static/{name}", include_in_schema=False)
def static_asset(name: str, _: Authorized) -> Response:
    """The page's script and style sheet, and Chart.js, vendored (MIT licence): the
    dashboard needs no network."""
    media_type = dashboard.STATIC_ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, "no such file")
    body = resources.files("ops").joinpath(f"static/{name}").read_text()
    # Chart.js changes only with a vendored upgrade; the page's own files with any release
    cache = "private, max-age=86400" if name == "chart.umd.min.js" else "no-cache"
    return Response(body, media_type=media_type,
                    headers={**SECURITY_HEADERS, "Cache-Control": cache})


@router.get("/v1/dashboard/data")
def dashboard_data(_: Authorized, state: StateDep, settings: SettingsDep,
                   response: Response) -> Dashboard:
    """Everything the dashboard draws, as JSON."""
    response.headers.update(SECURITY_HEADERS)
    return dashboard.collect(state, settings)
