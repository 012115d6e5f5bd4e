"""The HTTP API over real HTTP: uvicorn on a free port, the real Redis, a real worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from pydantic import SecretStr

from ops.embedded import free_port
from ops.http import create_app
from schemas.failures import FailureBatch, RankingFailure
from schemas.settings import Settings
from schemas.wisdom import Wisdom
from state import store
from tests.factories import episode, failure
from tests.services import ROOT, Worker, database, wait_until, worker_env
from worker import reducer


def idle_broker_url(redis_url: str) -> str:
    """Database 2: a broker no worker consumes, so nothing sent is processed."""
    return database(redis_url, 2)


@contextmanager
def serving(settings: Settings) -> Iterator[httpx.Client]:
    """The API in uvicorn on a free port (in a thread), and a client for it."""
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                            log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, "the API to start")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            yield http
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def idle(settings: Settings, redis_url: str, client: redis.Redis) -> Iterator[redis.Redis]:
    """The idle broker, emptied before and after."""
    broker = redis.Redis.from_url(idle_broker_url(redis_url))
    broker.flushdb()
    yield broker
    broker.flushdb()


@pytest.fixture
def api(settings: Settings, redis_url: str, idle: redis.Redis) -> Iterator[httpx.Client]:
    """The API with no auth, sending batches to the idle broker."""
    with serving(settings.model_copy(update={"broker_url": idle_broker_url(redis_url)})) as h:
        yield h


def nothing_accepted(client: redis.Redis, idle: redis.Redis) -> bool:
    return store.push_backlog(client) == ({}, 0) and idle.llen("episodes") == 0


# --- end to end ------------------------------------------------------------------------


@pytest.fixture
def live(redis_url: str, client: redis.Redis) -> Iterator[httpx.Client]:
    """`ripmap-optimizer serve` in a subprocess, and a worker running beat, which flushes
    partial batches after a 1 s wait. Their own broker database: no other worker interferes."""
    own_broker = database(redis_url, 3)
    env = worker_env(redis_url, RIPMAP_BROKER_URL=own_broker, RIPMAP_PUSH_MAX_WAIT_SECONDS="1")
    worker = Worker(env, concurrency=4, name="http-e2e", beat=True).wait_ready()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "serve", "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(base) or server.poll() is not None, 30, "serve to answer")
        assert server.poll() is None, server.stderr.read() if server.stderr else ""
        with httpx.Client(base_url=base, timeout=30) as http:
            yield http
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        worker.stop()
        redis.Redis.from_url(own_broker).flushdb()


def _up(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_posted_failures_come_out_as_merged_episodes(
    live: httpx.Client, client: redis.Redis
) -> None:
    # a full batch (5, the default size) is enqueued by the request itself
    full = [failure(i) for i in range(5)]
    answer = live.post("/v1/failures", json=full)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["accepted"] == 5 and len(body["batches"]) == 1
    assert {f["state"] for f in body["failures"]} == {"enqueued"}
    batch_id = body["batches"][0]
    assert batch_id == FailureBatch(failures=[RankingFailure.model_validate(f) for f in full]
                                    ).batch_id

    # one failure alone waits in its buffer; the beat flushes it after the maximum wait
    single = failure(7, repo_context={"name": "other-repo"})
    answer = live.post("/v1/failures", json=single)
    assert answer.status_code == 202
    assert answer.json()["failures"] == [
        {"repo": "other-repo", "state": "buffered", "batch_id": None, "position": 1}]
    lone_id = FailureBatch(failures=[RankingFailure.model_validate(single)]).batch_id

    wait_until(lambda: all(store.merged_flags(client, [batch_id, lone_id])), 90,
               "both batches merged")
    merged = {e["batch_id"]: e for e in store.recent_episodes(client, 10)}
    assert merged[batch_id]["failure_count"] == 5
    assert merged[lone_id]["failure_count"] == 1 and merged[lone_id]["repo"] == "other-repo"
    pad = live.get("/v1/scratchpad").json()
    assert pad["episodes"] == 2 and pad["signatures"]
    assert store.push_backlog(client) == ({}, 0)


# --- bad input -------------------------------------------------------------------------

BAD_INPUTS: list[tuple[str, Any, int, str, str]] = [
    # (case, body, status, JSON path, words of the message)
    ("malformed JSON", b'{"query": "x",', 422, "$", "malformed JSON"),
    ("wrong type", failure(1, ndcg="high"), 422, "$.ndcg", "valid number"),
    ("ndcg out of range", failure(1, ndcg=1.7), 422, "$.ndcg", "less than or equal to 1"),
    ("unknown field", failure(1, surprise=True), 422, "$.surprise", "Extra inputs"),
    ("empty expected_top", failure(1, expected_top=[]), 422, "$.expected_top", "at least 1"),
    ("empty list", [], 422, "$", "at least one is required"),
    ("not a failure", 42, 422, "$", "failure object or a list"),
    ("one bad among good", [failure(0), failure(1), failure(2), failure(3, ndcg=-0.1)],
     422, "$[3].ndcg", "greater than or equal to 0"),
    ("10 MB commit message", failure(1, commit_message="x" * 10_000_000), 413, "$",
     "request body over"),
]


@pytest.mark.parametrize(("case", "body", "status", "path", "words"), BAD_INPUTS,
                         ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_rejected_whole_with_status_path_and_message(
    api: httpx.Client, client: redis.Redis, idle: redis.Redis,
    case: str, body: Any, status: int, path: str, words: str,
) -> None:
    if isinstance(body, bytes):
        answer = api.post("/v1/failures", content=body,
                          headers={"content-type": "application/json"})
    else:
        answer = api.post("/v1/failures", json=body)
    assert answer.status_code == status, answer.text
    problems = answer.json()["detail"]
    assert any(p["path"] == path and words in p["msg"] for p in problems), problems
    assert nothing_accepted(client, idle)


def test_every_problem_of_a_list_is_reported(api: httpx.Client, client: redis.Redis,
                                             idle: redis.Redis) -> None:
    answer = api.post("/v1/failures", json=[failure(0, ndcg=2), failure(1),
                                            failure(2, expected_top=[], extra=1)])
    assert answer.status_code == 422
    paths = sorted(p["path"] for p in answer.json()["detail"])
    assert paths == ["$[0].ndcg", "$[2].expected_top", "$[2].extra"]
    assert nothing_accepted(client, idle)


def test_an_oversized_chunked_body_is_cut_off_with_413(api: httpx.Client, client: redis.Redis,
                                                       idle: redis.Redis) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'[{"query": "'
        for _ in range(300):
            yield b"x" * 10_000  # no Content-Length: the limit is enforced as bytes arrive

    answer = api.post("/v1/failures", content=chunks())
    assert answer.status_code == 413
    assert "request body over" in answer.json()["detail"][0]["msg"]
    assert nothing_accepted(client, idle)


def test_a_bad_query_parameter_gets_422_with_its_path(api: httpx.Client) -> None:
    answer = api.get("/v1/scratchpad", params={"top": 0})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["path"] == "query.top"


# --- reads -----------------------------------------------------------------------------


def test_good_posts_answer_202_with_receipts(api: httpx.Client, client: redis.Redis,
                                             idle: redis.Redis) -> None:
    answer = api.post("/v1/failures", json=[failure(i) for i in range(7)])
    assert answer.status_code == 202
    body = answer.json()
    assert body["accepted"] == 7 and len(body["batches"]) == 1
    assert [f["state"] for f in body["failures"]] == ["enqueued"] * 5 + ["buffered"] * 2
    assert [f["position"] for f in body["failures"][5:]] == [1, 2]
    assert idle.llen("episodes") == 1
    assert store.push_backlog(client) == ({"example-app": 2}, 0)


def test_params_scratchpad_and_wisdom(api: httpx.Client, client: redis.Redis,
                                      settings: Settings) -> None:
    params = api.get("/v1/params/current").json()
    assert len(params) == 17 and params["pagerank_alpha"] == 0.85

    assert api.get("/v1/wisdom/latest").status_code == 404
    for i in range(3):
        reducer.merge(client, episode(i), settings)
    pad = api.get("/v1/scratchpad", params={"top": 1}).json()
    assert pad["episodes"] == 3 and pad["proposals"] == 3
    assert len(pad["structural"]) == 1 and pad["structural"][0]["count"] == 1
    assert pad["changes"][0] == {"param": "depth_weight_root", "direction": "decrease",
                                 "count": 3, "mean_confidence": pytest.approx(0.6)}
    markdown = api.get("/v1/scratchpad", headers={"Accept": "text/markdown"})
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert "- Episodes: 3" in markdown.text

    wisdom = Wisdom(version=1, created_at=1.0, episodes_seen=3, reasoner="test",
                    warnings=["never zero the vendor weight"], intuitions="depth matters")
    store.save_wisdom(client, wisdom, consumed=3, keep=5)
    assert Wisdom.model_validate(api.get("/v1/wisdom/latest").json()) == wisdom
    md = api.get("/v1/wisdom/latest", headers={"Accept": "text/markdown, application/json;q=0.5"})
    assert md.headers["content-type"].startswith("text/markdown")
    assert md.text == wisdom.to_markdown()
    assert api.get("/v1/wisdom/latest", headers={"Accept": "application/json, text/markdown;q=0.1"}
                   ).json()["version"] == 1


def test_versions_best_and_evaluations(live: httpx.Client, client: redis.Redis,
                                       settings: Settings) -> None:
    assert live.get("/v1/params/best").status_code == 404
    assert live.get("/v1/params/0").json()["reason"] == "initial"
    assert live.get("/v1/params/7").status_code == 404
    change = {"param": "boost_chat_file", "direction": "decrease", "magnitude": "large"}
    quick = settings.model_copy(update={"consensus_quorum": 1})
    reducer.merge(client, episode(1, answer={"proposed_changes": [change]}), quick)
    v1 = live.get("/v1/params/1").json()
    assert v1["parent"] == 0 and v1["provenance"][0]["episode_id"] == "ep1"
    bad = live.post("/v1/evaluations", json={"version": 1, "mean_ndcg": 1.5, "cases": 3})
    assert bad.status_code == 422 and "mean_ndcg" in bad.text
    answer = live.post("/v1/evaluations", json={"version": 1, "mean_ndcg": 0.5, "cases": 40})
    assert answer.status_code == 202, answer.text
    wait_until(lambda: live.get("/v1/params/best").status_code == 200, 30, "best to move")
    assert live.get("/v1/params/best").json() == v1["params"]


def test_openapi_documents_every_route_and_the_failure_body(api: httpx.Client) -> None:
    doc = api.get("/openapi.json").json()
    assert {"/v1/failures", "/v1/params/current", "/v1/scratchpad", "/v1/wisdom/latest",
            "/healthz"} <= set(doc["paths"])
    body = doc["paths"]["/v1/failures"]["post"]["requestBody"]["content"]["application/json"]
    refs = [b.get("$ref") or b["items"]["$ref"] for b in body["schema"]["anyOf"]]
    assert refs == ["#/components/schemas/RankingFailure"] * 2
    assert "RankingFailure" in doc["components"]["schemas"]
    assert "413" in doc["paths"]["/v1/failures"]["post"]["responses"]
    # served outside FastAPI's routing, documented with the token like every /v1 route
    assert doc["paths"]["/v1/failures"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


def test_healthz_checks_redis(api: httpx.Client, settings: Settings) -> None:
    assert api.get("/healthz").json() == {"status": "ok", "redis": "ok"}
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with serving(down) as http:
        answer = http.get("/healthz")
    assert answer.status_code == 503 and answer.json()["status"] == "unavailable"


# --- auth ------------------------------------------------------------------------------


@pytest.fixture
def authed(settings: Settings, redis_url: str, idle: redis.Redis) -> Iterator[httpx.Client]:
    secured = settings.model_copy(update={"broker_url": idle_broker_url(redis_url),
                                          "api_token": SecretStr("s3cret-token")})
    with serving(secured) as http:
        yield http


@pytest.mark.parametrize(("headers", "words"), [
    ({}, "missing bearer token"),
    ({"Authorization": "Bearer wrong"}, "wrong bearer token"),
    ({"Authorization": "Basic czNjcmV0LXRva2Vu"}, "missing bearer token"),
])
def test_auth_rejects_missing_or_wrong_tokens(
    authed: httpx.Client, client: redis.Redis, idle: redis.Redis,
    headers: dict[str, str], words: str,
) -> None:
    for method, path, body in [("POST", "/v1/failures", failure(1)),
                               ("GET", "/v1/params/current", None),
                               ("GET", "/v1/scratchpad", None)]:
        answer = authed.request(method, path, json=body, headers=headers)
        assert answer.status_code == 401, (path, answer.text)
        assert answer.json()["detail"] == words
        assert answer.headers["www-authenticate"] == "Bearer"
    assert nothing_accepted(client, idle)


def test_auth_accepts_the_token_and_leaves_probes_open(authed: httpx.Client,
                                                       client: redis.Redis) -> None:
    good = {"Authorization": "Bearer s3cret-token"}
    assert authed.post("/v1/failures", json=failure(1), headers=good).status_code == 202
    assert authed.get("/v1/params/current", headers=good).status_code == 200
    assert authed.get("/healthz").status_code == 200
    assert authed.get("/openapi.json").status_code == 200
    assert store.push_backlog(client) == ({"example-app": 1}, 0)


def test_serve_on_the_embedded_default_runs_its_own_service(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RIPMAP_") and k not in ("REDIS_URL", "ANTHROPIC_API_KEY")}
    env.update(PYTHONPATH=str(ROOT), RIPMAP_DATA_DIR=str(tmp_path / "data"),
               RIPMAP_REASONER="heuristic", RIPMAP_EPISODE_CONCURRENCY="4")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "ops.cli", "serve", "--port", str(port)],
                              env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(base) or server.poll() is not None, 60, "serve to answer")
        assert server.poll() is None, server.stderr.read() if server.stderr else ""
        answer = httpx.post(base + "/v1/failures", json=[failure(i) for i in range(5)])
        assert answer.status_code == 202 and len(answer.json()["batches"]) == 1
        wait_until(lambda: httpx.get(base + "/v1/scratchpad").json()["episodes"] == 1, 90,
                   "the embedded workers to merge the episode")
        assert len(_processes_mentioning(str(tmp_path / "data"))) >= 3  # redis + 2 workers
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    assert server.returncode in (0, 143)
    assert _processes_mentioning(str(tmp_path / "data")) == [], "embedded service left running"


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain ``text`` (the embedded Redis and
    workers carry the data dir in theirs or in their environment's RIPMAP_DATA_DIR)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (proc / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline or text in environ:
            found.append(cmdline)
    return found
