"""The closed loop's state: registered repositories, evaluations due, and their results.

Every version the service creates is due one evaluation per registered repository
(``mark_due``, called when a version is committed). Whoever dispatches claims due entries
by pushing their score into the future (``claim_due``); the evaluation task removes its
entry when it has recorded the result (``finish``). An entry whose task was lost comes due
again after ``redispatch_seconds``. Duplicates cost one no-op task: the evaluation counts
once per (version, repository) through ``versions.record_evaluation``'s id.
"""

from __future__ import annotations

import time
from typing import cast

import redis

from schemas.repos import RegisteredRepo, RepoEvaluation
from state import keys, scripts

SEP = "|"


def entry(version: int, repo: str) -> str:
    """The due/result field of one (version, repository) pair."""
    return f"{version}{SEP}{repo}"


def parse_entry(raw: str) -> tuple[int, str]:
    """``entry``'s inverse."""
    version, _, repo = raw.partition(SEP)
    return int(version), repo


def add_repo(client: redis.Redis, repo: RegisteredRepo) -> bool:
    """Register ``repo``; False (and nothing stored) when its name is taken."""
    return bool(client.hsetnx(keys.REPOS, repo.name, repo.model_dump_json()))


def remove_repo(client: redis.Redis, name: str) -> bool:
    """Forget a repository (its results stay as history); False when unknown."""
    return bool(client.hdel(keys.REPOS, name))


def get_repo(client: redis.Redis, name: str) -> RegisteredRepo | None:
    """One registered repository by name."""
    raw = client.hget(keys.REPOS, name)
    return RegisteredRepo.model_validate_json(raw) if raw else None


def repos(client: redis.Redis) -> list[RegisteredRepo]:
    """Every registered repository, by name."""
    raw = cast(dict[str, str], client.hgetall(keys.REPOS))
    return [RegisteredRepo.model_validate_json(raw[n]) for n in sorted(raw)]


def mark_due(client: redis.Redis, version: int, names: list[str] | None = None) -> int:
    """Make ``version`` due on ``names`` (default: every registered repository) unless it
    already is or was evaluated there; returns how many entries were added."""
    names = cast(list[str], client.hkeys(keys.REPOS)) if names is None else names
    fresh = [entry(version, n) for n in names
             if not client.hexists(keys.EVAL_RESULTS, entry(version, n))]
    if not fresh:
        return 0
    return int(client.zadd(keys.EVAL_DUE, dict.fromkeys(fresh, 0.0), nx=True) or 0)


def claim_due(client: redis.Redis, redispatch_seconds: float, limit: int = 100,
              now: float | None = None) -> list[tuple[int, str]]:
    """Due entries this caller should send now; each is pushed ``redispatch_seconds`` into
    the future so the next caller skips it."""
    now = time.time() if now is None else now
    due = cast(list[str], client.zrangebyscore(keys.EVAL_DUE, "-inf", now, 0, limit))
    claimed = []
    for raw in due:
        # GT + CH: only a caller that moves the score forward counts the entry as its own.
        # Two callers racing both may win (the later one moves it further): the task is
        # idempotent, so the cost is one no-op task, never a double count.
        if client.zadd(keys.EVAL_DUE, {raw: now + redispatch_seconds}, xx=True, gt=True, ch=True):
            claimed.append(parse_entry(raw))
    return claimed


def due_count(client: redis.Redis) -> int:
    """Evaluations due or in flight."""
    return int(client.zcard(keys.EVAL_DUE))


def result(client: redis.Redis, version: int, repo: str) -> RepoEvaluation | None:
    """What the evaluation of ``version`` on ``repo`` measured, if it ran."""
    raw = client.hget(keys.EVAL_RESULTS, entry(version, repo))
    return RepoEvaluation.model_validate_json(raw) if raw else None


def results(client: redis.Redis) -> list[RepoEvaluation]:
    """Every evaluation recorded, by version then repository."""
    raw = cast(dict[str, str], client.hgetall(keys.EVAL_RESULTS))
    found = [RepoEvaluation.model_validate_json(v) for v in raw.values()]
    return sorted(found, key=lambda r: (r.version, r.repo))


def finish(client: redis.Redis, evaluation: RepoEvaluation) -> bool:
    """Store the result once and take the entry off the due set; False when a racing task
    stored it first."""
    field = entry(evaluation.version, evaluation.repo)
    pipe = client.pipeline(transaction=True)
    pipe.hsetnx(keys.EVAL_RESULTS, field, evaluation.model_dump_json())
    pipe.zrem(keys.EVAL_DUE, field)
    return bool(pipe.execute()[0])


def drop_due(client: redis.Redis, version: int, repo: str) -> None:
    """Take an entry that can never run (version or repository gone) off the due set."""
    client.zrem(keys.EVAL_DUE, entry(version, repo))


def set_budget(client: redis.Redis, repo: str, evaluations: int, ttl: int) -> None:
    """Allow ``evaluations`` more evaluations on ``repo`` (a ``tune`` run stops the loop at
    its goal this way); the budget lapses after ``ttl`` seconds unless ``renew_budget``."""
    client.set(keys.eval_budget(repo), evaluations, ex=ttl)


def renew_budget(client: redis.Redis, repo: str, ttl: int) -> None:
    """Keep the budget alive while its run follows the loop (a killed run's budget lapses,
    and the repository is evaluated on every version again)."""
    client.expire(keys.eval_budget(repo), ttl)


def clear_budget(client: redis.Redis, repo: str) -> None:
    """No budget on ``repo`` any more: every version is evaluated there again."""
    client.delete(keys.eval_budget(repo))


def budget_left(client: redis.Redis, repo: str) -> bool:
    """True when an evaluation on ``repo`` may run: no budget set, or some left."""
    left = client.get(keys.eval_budget(repo))
    return left is None or int(left) > 0


def spend_budget(client: redis.Redis, repo: str) -> None:
    """Count one stored evaluation against ``repo``'s budget, if one is set."""
    scripts.take_evaluation(client, repo)
