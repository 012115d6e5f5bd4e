"""The closed loop on a fixture repository: real Redis, real workers (the evaluation
worker included), the reference ranker scoring every version the service makes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ops import loop
from producer.api import Producer
from ranker import open_repository
from schemas import tasks
from schemas.params import ParameterPoint
from schemas.repos import EvaluateRequest, RegisteredRepo
from schemas.settings import Settings
from schemas.versions import Evaluation
from state import evaluations, keys, ledger, store, versions
from tests.gitrepos import add_commit, build_fixture
from tests.services import ROOT, Worker, wait_until, worker_env
from worker import evaluation

# A point the fixture's cases rank clearly worse than the defaults with (checked below).
WORSE = ParameterPoint(pagerank_alpha=0.99, boost_mentioned_ident=0.01,
                       boost_temporal_coupling=0.01, boost_focus_expansion=0.01,
                       git_recency_max_boost=0.01)


@pytest.fixture(scope="module")
def fixture_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture(tmp_path_factory.mktemp("loop") / "repo")


@pytest.fixture
def loop_env(redis_url: str, private_broker: str, tmp_path: Path) -> dict[str, str]:
    """Workers on a private broker; no consensus step (quorum out of reach), so the only
    versions are the test's own and the rollbacks the evaluations cause."""
    return worker_env(redis_url, RIPMAP_BROKER_URL=private_broker,
                      RIPMAP_DATA_DIR=str(tmp_path / "data"), RIPMAP_CONSENSUS_QUORUM="1000",
                      RIPMAP_CONSENSUS_MAX_WAIT_SECONDS="100000")


@pytest.fixture
def loop_settings(settings: Settings, loop_env: dict[str, str]) -> Settings:
    return settings.model_copy(update={"broker_url": loop_env["RIPMAP_BROKER_URL"],
                                       "data_dir": Path(loop_env["RIPMAP_DATA_DIR"])})


@pytest.fixture
def workers(loop_env: dict[str, str]) -> Iterator[list[Worker]]:
    started = [Worker(loop_env, queues="episodes,merge", concurrency=4, name="loop"),
               Worker(loop_env, queues="evaluate", concurrency=1, name="evaluate")]
    for w in started:
        w.wait_ready()
    yield started
    for w in started:
        w.stop()


def _register(client: redis.Redis, path: Path) -> None:
    assert evaluations.add_repo(client, RegisteredRepo(name="fixture", path=str(path)))


def _dispatch(settings: Settings) -> None:
    producer = Producer(settings)
    try:
        producer.send(tasks.DISPATCH_EVALUATIONS, [], None)
    finally:
        producer.close()


def test_versions_are_evaluated_their_failures_reasoned_and_a_worse_one_rolled_back(
    client: redis.Redis, loop_settings: Settings, workers: list[Worker], fixture_repo: Path,
    tmp_path: Path,
) -> None:
    ranker_repo = open_repository(fixture_repo, tmp_path / "check")
    default_ndcg = ranker_repo.evaluate(ParameterPoint()).ndcg
    assert ranker_repo.evaluate(WORSE).ndcg < default_ndcg - 0.1  # clearly worse
    _register(client, fixture_repo)
    evaluations.mark_due(client, 0)
    _dispatch(loop_settings)
    wait_until(lambda: evaluations.result(client, 0, "fixture"), 120, "v0 evaluated")
    v0 = evaluations.result(client, 0, "fixture")
    assert v0 is not None and v0.tuning.ndcg == pytest.approx(default_ndcg, abs=1e-6)
    assert v0.failures_pushed > 0 and v0.heldout.cases > 0
    # the version's failures come back as episodes, reasoned and merged
    wait_until(lambda: store.summary(client).episodes >= 1, 60, "episodes from v0's failures")
    bad = versions.set_manual(client, WORSE, "a clearly worse point", loop_settings)
    _dispatch(loop_settings)
    wait_until(lambda: versions.current_number(client) > bad.version, 120, "the rollback")
    rollback = versions.get(client, versions.current_number(client))
    assert rollback is not None and rollback.reason == "rollback"
    assert rollback.params == ParameterPoint()
    best = versions.get(client, versions.best_number(client) or 0)
    assert best is not None and best.params == ParameterPoint()  # v0, or its copy once scored
    worse = evaluations.result(client, bad.version, "fixture")
    assert worse is not None and worse.verdict == "rolled-back"
    # the rollback is a new version: it is evaluated too, without anyone asking
    wait_until(lambda: evaluations.result(client, rollback.version, "fixture"), 120,
               "the rollback's evaluation")
    wait_until(lambda: ledger.open_count(client) == 0, 120, "every failure batch merged")


def test_two_evaluation_workers_racing_on_one_version_record_it_once(
    client: redis.Redis, loop_settings: Settings, loop_env: dict[str, str], fixture_repo: Path,
) -> None:
    _register(client, fixture_repo)
    racers = [Worker(loop_env, queues="evaluate", concurrency=1, name=f"race{i}")
              for i in range(2)]
    try:
        for w in racers:
            w.wait_ready()
        producer = Producer(loop_settings)
        body = [EvaluateRequest(version=0, repo="fixture").model_dump(mode="json")]
        for i in range(4):  # the same evaluation, four times, to both workers at once
            producer.send(tasks.EVALUATE_VERSION, body, f"race-{i}")
        producer.close()
        wait_until(lambda: evaluations.result(client, 0, "fixture"), 120, "v0 evaluated")
        wait_until(lambda: all(w.log.read_bytes().count(b"succeeded") + w.log.read_bytes()
                               .count(b"Task ripmap.evaluate_version") >= 0 for w in racers),
                   5, "logs")
        wait_until(lambda: _tasks_done(loop_settings) == 0, 120, "the queue drained")
    finally:
        for w in racers:
            w.stop()
    result = evaluations.result(client, 0, "fixture")
    assert result is not None
    cases = int(client.hget(keys.EVALS, "0:cases") or 0)
    assert cases == result.tuning.cases  # recorded once, not once per racing worker
    # failures pushed once: one sample's batches claimed, not four
    batches = -(-result.failures_pushed // loop_settings.batch_size)
    assert len(client.keys(keys.batch_seen("*"))) == batches


def _tasks_done(settings: Settings) -> int:
    broker = redis.Redis.from_url(settings.broker)
    return int(broker.llen(tasks.EVALUATE_QUEUE)) + int(broker.hlen("unacked"))


def _cli(args: list[str], tmp_path: Path, cwd: Path | None = None
         ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RIPMAP_") and k not in ("REDIS_URL", "ANTHROPIC_API_KEY")}
    env.update({"PYTHONPATH": str(ROOT), "RIPMAP_DATA_DIR": str(tmp_path / "data"),
                "RIPMAP_REASONER": "heuristic", "RIPMAP_EPISODE_CONCURRENCY": "8",
                "COLUMNS": "200"})
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], capture_output=True,
                          text=True, env=env, cwd=cwd or tmp_path, timeout=300, check=False)


def test_tune_on_the_embedded_default_writes_the_best_version(
    fixture_repo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "best.json"
    run = _cli(["tune", "--repo", str(fixture_repo), "--evaluations", "2", "--output",
                str(out), "--stall-seconds", "90"], tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    evaluated = re.search(r"(\d+) versions evaluated", run.stdout)
    assert evaluated is not None and int(evaluated.group(1)) == 2, run.stdout  # the budget
    best = ParameterPoint.model_validate(json.loads(out.read_text()))
    assert best.as_floats().keys() == ParameterPoint().as_floats().keys()
    assert "best version v" in run.stdout


def test_bad_repositories_are_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    for args, says in ((["evaluate", "--repo", str(tmp_path / "plain")], "not a git repository"),
                       (["evaluate", "--repo", str(tmp_path / "none")], "no such directory"),
                       (["tune", "--repo", str(tmp_path / "plain")], "not a git repository")):
        run = _cli(args, tmp_path)
        assert run.returncode == 2 and says in " ".join(run.stderr.split()), run.stderr
    assert not (tmp_path / "best_params.json").exists()


def test_demo_in_a_git_repository_runs_the_closed_loop_on_its_history(
    fixture_repo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "best.json"
    run = _cli(["demo", "--output", str(out)], tmp_path, cwd=fixture_repo)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "tune: each version scored" in run.stdout and "v0" in run.stdout
    assert "Distilled Operator Wisdom" in run.stdout
    ParameterPoint.model_validate(json.loads(out.read_text()))


def test_evaluate_json_is_byte_identical_and_names_the_inert_parameter(
    fixture_repo: Path, tmp_path: Path
) -> None:
    failures = tmp_path / "failures.jsonl"
    first = _cli(["evaluate", "--repo", str(fixture_repo), "--json",
                  "--failures-out", str(failures)], tmp_path)
    second = _cli(["evaluate", "--repo", str(fixture_repo), "--json"], tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout  # the second run loads the cached index
    report = json.loads(first.stdout)
    assert set(report) >= {"repo", "tuning", "heldout", "sensitivity", "params"}
    assert 0 < report["tuning"]["low"] <= report["tuning"]["ndcg"] <= report["tuning"]["high"]
    assert "boost_chat_file" in report["sensitivity"]["inert"]
    lines = failures.read_text().splitlines()
    assert lines and all(json.loads(x)["ndcg"] < 0.5 for x in lines)


def test_repo_add_list_remove_and_their_errors(fixture_repo: Path, tmp_path: Path) -> None:
    added = _cli(["repo", "add", str(fixture_repo), "--name", "fx"], tmp_path)
    assert added.returncode == 0 and "registered fx" in added.stdout, added.stderr
    again = _cli(["repo", "add", str(fixture_repo), "--name", "fx"], tmp_path)
    assert again.returncode == 2 and "registered already" in again.stderr
    bad = _cli(["repo", "add", str(fixture_repo), "--name", "no spaces"], tmp_path)
    assert bad.returncode == 2 and "--name" in bad.stderr
    listed = _cli(["repo", "list"], tmp_path)
    assert "fx" in listed.stdout and str(fixture_repo) in listed.stdout
    assert _cli(["repo", "remove", "fx"], tmp_path).returncode == 0
    gone = _cli(["repo", "remove", "fx"], tmp_path)
    assert gone.returncode == 2 and "no registered repository" in gone.stderr


def test_a_redelivery_after_a_worker_died_past_recording_finishes_the_work(
    client: redis.Redis, loop_settings: Settings, fixture_repo: Path
) -> None:
    """The first copy recorded the evidence and died before storing its result: the next
    copy stores the result, pushes the failures and takes the entry off the due set."""
    _register(client, fixture_repo)
    request = EvaluateRequest(version=0, repo="fixture")
    evaluations.mark_due(client, 0)
    versions.record_evaluation(client, Evaluation(version=0, mean_ndcg=0.5, cases=30),
                               evaluation.evaluation_id(request), loop_settings)
    producer = Producer(loop_settings)
    try:
        result = evaluation.evaluate(client, loop_settings, request, producer)
    finally:
        producer.close()
    assert result is not None and result.verdict == "recorded" and result.failures_pushed > 0
    assert evaluations.result(client, 0, "fixture") == result and result.head
    assert evaluations.due_count(client) == 0
    assert int(client.hget(keys.EVALS, "0:cases") or 0) == 30  # the evidence counted once
    assert ledger.open_count(client) == -(-result.failures_pushed // loop_settings.batch_size)


def test_a_budget_stops_evaluations_and_lapses_with_its_run(
    client: redis.Redis, loop_settings: Settings, fixture_repo: Path
) -> None:
    _register(client, fixture_repo)
    evaluations.set_budget(client, "fixture", 1, ttl=60)
    producer = Producer(loop_settings)
    try:
        first = evaluation.evaluate(client, loop_settings,
                                    EvaluateRequest(version=0, repo="fixture"), producer)
        versions.set_manual(client, WORSE, "next", loop_settings)
        spent = evaluation.evaluate(client, loop_settings,
                                    EvaluateRequest(version=1, repo="fixture"), producer)
    finally:
        producer.close()
    assert first is not None and spent is None  # one evaluation, then the budget is spent
    assert evaluations.due_count(client) == 0  # the refused one is not left due
    assert 0 < client.ttl(keys.eval_budget("fixture")) <= 60  # a killed run's budget lapses


def test_repo_add_makes_the_current_version_due_and_refuses_a_second_name(
    fixture_repo: Path, tmp_path: Path
) -> None:
    assert _cli(["repo", "add", str(fixture_repo), "--name", "one"], tmp_path).returncode == 0
    again = _cli(["repo", "add", str(fixture_repo), "--name", "two"], tmp_path)
    assert again.returncode == 2 and "registered as 'one'" in " ".join(again.stderr.split())
    status = json.loads(_cli(["status", "--json"], tmp_path).stdout)
    assert status["repositories"] == ["one"] and status["evaluations_due"] == 1


def test_a_registered_repository_is_scored_at_its_pinned_commit(
    client: redis.Redis, loop_settings: Settings, fixture_repo: Path, tmp_path: Path
) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(fixture_repo), str(clone)], check=True)
    pinned = open_repository(clone, tmp_path / "cache").index.head
    loop.ensure_registered(client, clone, "pinned", 2000, pinned)
    add_commit(clone, "fix config parsing in the engine", ["app.py", "src/pkg/util.py"],
               revision=99)  # HEAD moves on after registration
    producer = Producer(loop_settings)
    try:
        result = evaluation.evaluate(client, loop_settings,
                                     EvaluateRequest(version=0, repo="pinned"), producer)
    finally:
        producer.close()
    assert result is not None and result.head == pinned
    assert open_repository(clone, tmp_path / "cache").index.head != pinned
