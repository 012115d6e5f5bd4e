"""The HTTP API: ranking services push failures and read parameters, the scratchpad and
wisdom over HTTP, without importing our code. Run it with ``ripmap-optimizer serve``.

Routes live on three routers: ``v1`` (everything under ``/v1``, behind the optional bearer
token), ``scraped`` (``/metrics`` for Prometheus, behind the same token) and ``probes``
(``/healthz``, always open). Add a route by decorating a function
with ``@v1.get(...)``/``@v1.post(...)`` and taking ``StateDep``/``PusherDep``/``SettingsDep``;
read shared state only through ``state.store``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import TypeAdapter, ValidationError
from starlette.routing import Route

from ops import metrics
from ops.http_dashboard import router as dashboard_router
from ops.http_deps import (
    PusherDep,
    SettingsDep,
    StateDep,
    authorize,
    require_token,
)
from producer.push import Pusher
from schemas.failures import RankingFailure
from schemas.features import RepoFeatures
from schemas.ingest import Problem, ProblemResponse, PushResponse
from schemas.params import ParameterPoint
from schemas.scratchpad import ScratchpadSummary
from schemas.settings import Settings, get_settings
from schemas.versions import Evaluation, ParamVersion
from schemas.wisdom import Recommendation, Wisdom
from state import presets, store, versions

MARKDOWN = "text/markdown"
PUSH_THREADS = 40  # pushes in flight at once, as many as Starlette's default thread pool
FailureInput = RankingFailure | list[RankingFailure]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BadInput(HTTPException):
    """The request body was rejected as a whole; ``problems`` name every bad value.

    An HTTPException, so FastAPI's own body parsing (on routes with a model body) passes
    it through instead of turning a 413 raised while reading the body into a 400.
    """

    def __init__(self, status: int, problems: list[Problem]) -> None:
        super().__init__(status, "; ".join(f"{p.path}: {p.msg}" for p in problems))
        self.problems = problems


v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])
# The hot route, POST /v1/failures, is served as a plain Starlette route: FastAPI's
# per-route machinery (solving dependencies, its request and response wrappers) cost about a
# quarter of a single-failure request. It checks the token itself (``authorize``);
# ``documented`` only describes it in the OpenAPI document.
documented = APIRouter(prefix="/v1")
probes = APIRouter()
# Prometheus scrapes /metrics with the same optional bearer token as /v1
# (``authorization: {credentials: ...}`` in its scrape config).
scraped = APIRouter(dependencies=[Depends(require_token)])

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    413: {"model": ProblemResponse, "description": "request body over the size limit"},
    422: {"model": ProblemResponse, "description": "invalid input: every problem, by JSON path"},
}
_AUTH: dict[int | str, dict[str, Any]] = {401: {"description": "missing or wrong bearer token"}}


# --- routes ----------------------------------------------------------------------------

_FAILURE_INPUT_SCHEMA = TypeAdapter(FailureInput).json_schema(
    ref_template="#/components/schemas/{model}"
)


@documented.post(
    "/failures",
    status_code=202,
    response_model=PushResponse,
    responses={**_PROBLEMS, **_AUTH},
    summary="Push one failure or a list of failures",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {k: v for k, v in _FAILURE_INPUT_SCHEMA.items() if k != "$defs"}}}},
        "security": [{"HTTPBearer": []}]},
)
async def post_failures(request: Request) -> Response:
    """Validate every failure, then push them all (or none): each lands in its repository's
    buffer, and every batch a push fills is enqueued at once. 202 with one receipt each."""
    settings: Settings = request.app.state.settings
    authorize(request)
    body = await request.body()
    answer = await asyncio.get_running_loop().run_in_executor(
        request.app.state.pushers, _accept, request.app.state.pusher, body,
        settings.api_max_failures_per_request)
    # serialised here: the receipts are built valid, FastAPI need not validate them again
    return Response(answer.model_dump_json(), status_code=202, media_type="application/json")


@v1.get("/params/current", response_model=ParameterPoint, responses=_AUTH)
def get_current_params(state: StateDep) -> ParameterPoint:
    """The current parameters: ripmap's params.json (17 floats)."""
    return store.get_params(state)


@v1.get("/params/best", response_model=ParameterPoint,
        responses={**_AUTH, 404: {"description": "no version has enough evaluations yet"}})
def get_best_params(state: StateDep) -> ParameterPoint:
    """The best-scoring version's parameters (by reported NDCG)."""
    best = versions.best_number(state)
    record = versions.get(state, best) if best is not None else None
    if record is None:
        raise HTTPException(404, detail="no best version yet: report evaluations first")
    return record.params


@v1.get("/params/{version}", response_model=ParamVersion,
        responses={**_AUTH, 404: {"description": "no such version"}})
def get_params_version(version: Annotated[int, Path(ge=0)], state: StateDep) -> ParamVersion:
    """One parameter version: values, parent, reason, and the episodes that produced it."""
    record = versions.get(state, version)
    if record is None:
        raise HTTPException(404, detail=f"no parameter version {version}")
    return record


@v1.post("/evaluations", status_code=202, responses={**_PROBLEMS, **_AUTH})
def post_evaluation(evaluation: Evaluation, pusher: PusherDep) -> dict[str, Any]:
    """Report the mean NDCG a ranking service measured for a version; the service moves
    ``best`` when the evidence supports it and rolls back a clear regression."""
    return {"evaluation_id": pusher.producer.report_evaluation(evaluation),
            "version": evaluation.version}


@v1.get(
    "/scratchpad",
    response_model=ScratchpadSummary,
    responses={**_AUTH, 422: _PROBLEMS[422],
               200: {"content": {MARKDOWN: {"schema": {"type": "string"}}}}},
)
def get_scratchpad(
    request: Request, state: StateDep, top: Annotated[int, Query(ge=1, le=100)] = 10
) -> Response | ScratchpadSummary:
    """Counts and the ``top`` most frequent insights of each kind (markdown on request)."""
    summary = store.summary(state, top)
    if _wants_markdown(request):
        return PlainTextResponse(summary.to_markdown(), media_type=MARKDOWN)
    return summary


@v1.get(
    "/wisdom/latest",
    response_model=Wisdom,
    responses={**_AUTH, 404: {"description": "nothing distilled yet"},
               200: {"content": {MARKDOWN: {"schema": {"type": "string"}}}}},
)
def get_latest_wisdom(request: Request, state: StateDep) -> Response | Wisdom:
    """The newest distilled wisdom, as JSON or (``Accept: text/markdown``) markdown."""
    wisdom = store.latest_wisdom(state)
    if wisdom is None:
        raise HTTPException(404, detail="no wisdom yet: nothing has been distilled")
    if _wants_markdown(request):
        return PlainTextResponse(wisdom.to_markdown(), media_type=MARKDOWN)
    return wisdom


@v1.post("/recommend", response_model=Recommendation,
         responses={**_PROBLEMS, **_AUTH, 404: {"description": "no measured preset yet"}})
def post_recommend(features: RepoFeatures, state: StateDep) -> Recommendation:
    """The latest wisdom's measured preset for a repository's features (``matched`` false,
    with each preset's failed clauses, when none applies): for ranking services that cannot
    share their repository. ``ripmap-optimizer recommend --json`` prints the features."""
    rec = presets.recommendation(state, features)
    if rec is None:
        raise HTTPException(404, detail="no preset yet: no distillation has measured presets")
    return rec


@probes.get("/healthz", responses={503: {"description": "Redis is unreachable"}})
def healthz(request: Request) -> JSONResponse:
    """200 when the state store answers PING, else 503 (no auth: for load balancers)."""
    try:
        request.app.state.health.ping()
    except redis.RedisError as exc:
        return JSONResponse({"status": "unavailable", "redis": str(exc)}, status_code=503)
    return JSONResponse({"status": "ok", "redis": "ok"})


# --- input -----------------------------------------------------------------------------


@scraped.get(
    "/metrics", response_class=PlainTextResponse, responses={
        **_AUTH, 503: {"description": "the state store or the broker cannot be read"}},
    summary="Prometheus metrics (text format; OpenMetrics on request)",
)
def get_metrics(request: Request, state: StateDep, settings: SettingsDep) -> Response:
    """The service's figures, read from the state store at scrape time (ops/metrics.py;
    every name in the README's table)."""
    try:
        body, content_type = metrics.render(state, settings, request.headers.get("accept", ""))
    except Exception as exc:  # a scrape that cannot read says why, as a 503
        return PlainTextResponse(f"metrics unavailable: {type(exc).__name__}: {exc}\n",
                                 status_code=503)
    return Response(body, media_type=content_type)


def _accept(pusher: Pusher, body: bytes, max_items: int) -> PushResponse:
    receipts = pusher.push_valid(parse_failures(body, max_items))
    batches = list(dict.fromkeys(r.batch_id for r in receipts if r.batch_id))
    return PushResponse(accepted=len(receipts), batches=batches, failures=receipts)


def parse_failures(body: bytes, max_items: int) -> list[RankingFailure]:
    """One failure object or a list of them; BadInput (422) names every problem by path."""
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        msg = f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        raise BadInput(422, [_problem([], msg, "json_invalid")]) from None
    except UnicodeDecodeError:
        raise BadInput(422, [_problem([], "malformed JSON: not UTF-8", "json_invalid")]) from None
    if isinstance(value, dict):
        return [_validate(value, [])]
    if not isinstance(value, list):
        raise BadInput(422, [_problem([], "expected a failure object or a list of failures",
                                      "type_error")])
    if not value:
        raise BadInput(422, [_problem([], "no failures given: at least one is required",
                                      "too_short")])
    if len(value) > max_items:
        raise BadInput(422, [_problem([], f"{len(value)} failures in one request: at most "
                                      f"{max_items}", "too_long")])
    out, problems = [], []
    for i, record in enumerate(value):
        try:
            out.append(_validate(record, [i]))
        except BadInput as exc:
            problems += exc.problems
    if problems:
        raise BadInput(422, problems)
    return out


def _validate(record: Any, prefix: list[str | int]) -> RankingFailure:
    try:
        return RankingFailure.model_validate(record)
    except ValidationError as exc:
        raise BadInput(422, [_problem([*prefix, *e["loc"]], e["msg"], e["type"])
                             for e in exc.errors(include_url=False)]) from None


def _problem(loc: list[str | int], msg: str, kind: str) -> Problem:
    return Problem(path=_path(["body", *loc]), loc=["body", *loc], msg=msg, type=kind)


def _wants_markdown(request: Request) -> bool:
    """True when the Accept header prefers text/markdown over JSON."""
    best, best_q = "", 0.0
    for part in request.headers.get("accept", "").split(","):
        media, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, val = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(val)
                except ValueError:
                    q = 0.0
        if media.strip() in (MARKDOWN, "application/json") and q > best_q:
            best, best_q = media.strip(), q
    return best == MARKDOWN


# --- the app ---------------------------------------------------------------------------


class BodyLimit:
    """413 for request bodies over ``max_bytes``: at once from Content-Length, else as soon
    as the streamed body passes the limit, so an oversized body is never read whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            # answered without reading the body; the connection is closed after it
            await _problem_response(self._too_large(), scope, send)
            return
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BadInput(413, self._too_large().problems)
            return message

        await self.app(scope, counting, send)

    def _too_large(self) -> BadInput:
        return BadInput(413, [_problem([], f"request body over {self.max_bytes} bytes",
                                       "too_large")])


async def _problem_response(exc: BadInput, scope: Scope, send: Send) -> None:
    response = JSONResponse(ProblemResponse(detail=exc.problems).model_dump(mode="json"),
                            status_code=exc.status_code, headers={"Connection": "close"})
    await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API app for ``settings`` (the environment's by default)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pusher = Pusher(settings)
        app.state.health = store.connect(settings.state_url, max_connections=4, probe=True)
        # pushes block on Redis: off the event loop, through a plain executor (anyio's
        # thread hand-off cost a tenth of a single-failure request)
        app.state.pushers = ThreadPoolExecutor(PUSH_THREADS, thread_name_prefix="push")
        try:
            yield
        finally:
            app.state.pushers.shutdown(wait=True)
            app.state.pusher.close()
            app.state.health.close()

    app = FastAPI(title="ripmap-optimizer", version=_version(), lifespan=lifespan,
                  description=__doc__)
    app.state.settings = settings
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.add_exception_handler(BadInput, _bad_input)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(redis.ConnectionError, _unavailable)
    app.add_exception_handler(redis.TimeoutError, _unavailable)
    app.include_router(probes)
    app.include_router(scraped)
    app.router.routes.append(Route("/v1/failures", post_failures, methods=["POST"]))
    app.include_router(v1)
    app.include_router(dashboard_router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


async def _bad_input(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadInput)
    return JSONResponse(ProblemResponse(detail=exc.problems).model_dump(mode="json"),
                        status_code=exc.status_code)


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """FastAPI's own 422s (query parameters, ...) with JSON paths like ours."""
    assert isinstance(exc, RequestValidationError)
    problems = [Problem(path=_path(e["loc"]), loc=list(e["loc"]), msg=e["msg"], type=e["type"])
                for e in exc.errors()]
    return JSONResponse(ProblemResponse(detail=problems).model_dump(mode="json"), status_code=422)


def _path(loc: Sequence[str | int]) -> str:
    """``$[2].ndcg`` for the body, ``query.top`` for a query parameter."""
    head, *rest = loc or ["body"]
    start = "$" if head == "body" else str(head)
    return start + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in rest)


async def _unavailable(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": f"state store unavailable: {exc}"}, status_code=503)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the models of the hand-parsed failure body."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version,
                             routes=[*app.routes, *documented.routes],
                             description=app.description)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(_FAILURE_INPUT_SCHEMA.get("$defs", {}))
        app.openapi_schema = schema
    return app.openapi_schema


def _version() -> str:
    try:
        return metadata.version("ripmap-optimizer")
    except metadata.PackageNotFoundError:
        return "0"
