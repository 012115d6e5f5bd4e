"""The closed loop's worker side: score a version on a registered repository, record it,
and push that version's failures back as episodes.

``tuning`` NDCG is recorded through the same path as ``report-eval`` (so best and
rollback follow it); ``heldout`` NDCG is stored beside it for reporting only.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import OrderedDict
from pathlib import Path

import redis

from producer.api import Producer
from ranker import Repository, open_repository
from ranker.repository import Split
from schemas import tasks
from schemas.failures import RankingFailure, RepoContext
from schemas.params import ParameterPoint
from schemas.repos import EvaluateRequest, RegisteredRepo, RepoEvaluation, SplitScore
from schemas.settings import Settings
from schemas.versions import Evaluation
from state import evaluations, versions

_open: OrderedDict[tuple[str, int, str], Repository] = OrderedDict()
OPEN_KEPT = 8  # indexes a process keeps (each tens of MiB on a large repository)
_open_lock = threading.Lock()  # one index build per repository, not one per thread


def cache_dir(settings: Settings) -> Path:
    """Where the ranker keeps each repository's index."""
    return settings.data_dir / "ranker"


def repository(repo: RegisteredRepo, settings: Settings) -> Repository:
    """The repository's ranker index at its pinned commit (or HEAD, kept up to date:
    ``open_repository`` extends a cached index with new commits), opened once per process."""
    rev = repo.commit or "HEAD"
    with _open_lock:
        key = (repo.path, repo.window, rev)
        cached = _open.get(key)
        if cached is None or not cached.is_current():
            _open[key] = open_repository(repo.path, cache_dir(settings), window=repo.window,
                                         rev=rev)
        _open.move_to_end(key)
        while len(_open) > OPEN_KEPT:  # least recently used first (a removed repository's)
            _open.popitem(last=False)
        return _open[key]


def split_score(repo: Repository, point: ParameterPoint, split: Split) -> SplitScore:
    """One split's NDCG with its interval, as the contract's model."""
    ev = repo.evaluate(point, split)
    return SplitScore(ndcg=_unit(ev.ndcg), low=_unit(ev.low), high=_unit(ev.high),
                      cases=ev.cases, commits=ev.commits)


def _unit(x: float) -> float:
    return round(min(1.0, max(0.0, x)), 6)


def evaluate(client: redis.Redis, settings: Settings, request: EvaluateRequest,
             producer: Producer | None = None) -> RepoEvaluation | None:
    """Score ``request.version`` on ``request.repo`` and store it once; None when it was
    stored before, can no longer run (version dropped by retention, repository removed),
    or the repository's budget is spent."""
    record = versions.get(client, request.version)
    registered = evaluations.get_repo(client, request.repo)
    if (record is None or registered is None
            or evaluations.result(client, request.version, request.repo) is not None
            or not evaluations.budget_left(client, request.repo)):
        evaluations.drop_due(client, request.version, request.repo)
        return None
    started = time.perf_counter()
    repo = repository(registered, settings)
    tuning = split_score(repo, record.params, "tuning")
    heldout = split_score(repo, record.params, "heldout")
    verdict = versions.record_evaluation(
        client, Evaluation(version=request.version, mean_ndcg=tuning.ndcg,
                           cases=max(tuning.cases, 1)),
        evaluation_id(request), settings)
    # Every step from here is idempotent, so a copy that finds the evidence recorded (a
    # racing worker, or a redelivery after a worker died past this point) finishes the
    # work: the failures' batch ids are content hashes (sent once), the result is HSETNX.
    failures = sample_failures(repo, registered, record.params, request.version,
                               settings.eval_failures_per_version)
    if failures:
        _push(failures, settings, producer)  # before the result: a failed push is retried
    result = RepoEvaluation(
        version=request.version, repo=request.repo, tuning=tuning, heldout=heldout,
        failures_pushed=len(failures), verdict="recorded" if verdict == "duplicate" else verdict,
        seconds=round(time.perf_counter() - started, 3), finished_at=time.time(),
        head=repo.index.head)
    if not evaluations.finish(client, result):
        return None
    evaluations.spend_budget(client, request.repo)
    return result


def evaluation_id(request: EvaluateRequest) -> str:
    """The id ``record_evaluation`` dedupes on: one per (version, repository); the name
    is hashed so that long names never collide by truncation."""
    digest = hashlib.sha256(request.repo.encode()).hexdigest()[:16]
    return f"auto:{request.version}:{digest}"


def sample_failures(repo: Repository, registered: RegisteredRepo, point: ParameterPoint,
                    version: int, limit: int, seed: int | None = None) -> list[RankingFailure]:
    """Up to ``limit`` failing tuning cases, sampled with ``seed`` (the version by default:
    each version shows the reasoners different cases), named after the registered
    repository."""
    failing = repo.failures(point, "tuning", params_version=version)
    if len(failing) > limit:
        failing = random.Random(version if seed is None else seed).sample(failing, limit)
    context = RepoContext(name=registered.name, file_count=repo.file_count)
    return [f.model_copy(update={"repo_context": context}) for f in failing]


def push_failures_again(client: redis.Redis, settings: Settings, version: int, repo_name: str,
                        producer: Producer) -> int:
    """Push a fresh sample of an evaluated version's failures (a new ``tune`` run on a
    repository whose current version was evaluated there before); returns how many."""
    record = versions.get(client, version)
    registered = evaluations.get_repo(client, repo_name)
    if record is None or registered is None:
        return 0
    failures = sample_failures(repository(registered, settings), registered, record.params,
                               version, settings.eval_failures_per_version, time.time_ns())
    if failures:
        _push(failures, settings, producer)
    return len(failures)


def _push(failures: list[RankingFailure], settings: Settings, producer: Producer | None) -> None:
    own = producer is None
    producer = producer or Producer(settings)
    try:
        producer.enqueue([f.model_dump(mode="json") for f in failures])
    finally:
        if own:
            producer.close()


def dispatch_due(client: redis.Redis, settings: Settings, producer: Producer) -> int:
    """Send the evaluations due; returns how many were sent."""
    due = evaluations.claim_due(client, settings.evaluate_redispatch_seconds)
    for version, repo in due:
        request = EvaluateRequest(version=version, repo=repo)
        producer.send(tasks.EVALUATE_VERSION, [request.model_dump(mode="json")],
                      f"evaluate-{version}-{repo}-{time.time_ns()}")
    return len(due)


def sweep(client: redis.Redis) -> int:
    """Mark the current version due again where it has no result: a version committed by a
    process that died before marking it is evaluated all the same."""
    return evaluations.mark_due(client, versions.current_number(client))
