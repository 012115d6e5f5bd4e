"""Parameter versions: consensus steps, NDCG evidence, best tracking and rollback."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from schemas.params import ParameterPoint
from schemas.settings import Settings
from schemas.versions import Evaluation, ParamVersion, Reason, VersionScore, Vote
from state import consensus, evaluations, keys, scripts, store

INITIAL = ParamVersion(version=0, params=ParameterPoint(), reason="initial")
STEP_RETRIES = 20


def get(client: redis.Redis, version: int) -> ParamVersion | None:
    """Version ``version``'s record (version 0 is the seed's defaults)."""
    if version == 0:
        return INITIAL
    raw = client.get(keys.param_version(version))
    return ParamVersion.model_validate_json(raw) if raw else None


def current_number(client: redis.Redis) -> int:
    """The current version number."""
    return int(client.get(keys.PARAMS_CURRENT) or 0)


def best_number(client: redis.Redis) -> int | None:
    """The best version by reported NDCG, if any version has enough evidence."""
    raw = client.get(keys.PARAMS_BEST)
    return int(raw) if raw is not None else None


def pending_votes(client: redis.Redis) -> int:
    """How many votes wait for the next consensus step."""
    return int(client.hlen(keys.PENDING))


def evaluation_recorded(client: redis.Redis, evaluation_id: str) -> bool:
    """Whether the evaluation with this id has been recorded and judged."""
    return client.get(keys.evaluation_seen(evaluation_id)) == "done"


def try_step(client: redis.Redis, settings: Settings, *, min_votes: int) -> ParamVersion | None:
    """Take the consensus step from the current version if ``min_votes`` votes are pending.

    Concurrent callers race through STEP_VERSION's compare-and-set: exactly one creates
    the next version; the others see the current version moved on and stop.
    """
    for _ in range(STEP_RETRIES):
        current, raw_params, raw_votes = scripts.step_context(client)
        if len(raw_votes) < max(min_votes, 1):
            return None
        if unevaluated_steps(client, current) >= settings.max_unevaluated_steps:
            return None  # trust region: the votes wait as they are for an evaluation
        votes = sorted((Vote.model_validate_json(v) for v in raw_votes),
                       key=lambda v: v.episode_id)
        params, factors = consensus.step(store.params_from(raw_params), votes,
                                         settings.max_step_factor)
        record = ParamVersion(version=current + 1, parent=current, params=params,
                              reason="consensus", factors=factors, provenance=votes,
                              created_at=time.time())
        outcome = _commit(client, record, len(raw_votes), settings)
        if outcome == 1:
            return record
        if outcome == 0:
            return None
    return None


def unevaluated_steps(client: redis.Redis, version: int | None = None) -> int:
    """Consensus steps from the newest evaluated ancestor of ``version`` (default: current)
    to it: how far the parameters moved without evidence."""
    v: int | None = current_number(client) if version is None else version
    steps = 0
    while v is not None and not score(client, v).cases:
        record = get(client, v)
        if record is None:  # left retention unevaluated: at most v more steps led to it
            return steps + v
        steps += record.reason == "consensus"
        v = record.parent
    return steps


def held_for_evaluation(client: redis.Redis, settings: Settings) -> bool:
    """True when votes wait because the trust region is exhausted."""
    return (pending_votes(client) > 0
            and unevaluated_steps(client) >= settings.max_unevaluated_steps)


def tick(client: redis.Redis, settings: Settings, *, force: bool = False) -> ParamVersion | None:
    """Step on pending votes that waited past the configured wait (or now, when forced)."""
    since = client.get(keys.PENDING_SINCE)
    if since is None:
        return None
    if not force and time.time() - float(since) < settings.consensus_max_wait_seconds:
        return None
    return try_step(client, settings, min_votes=1)


def set_manual(client: redis.Redis, params: ParameterPoint, note: str,
               settings: Settings) -> ParamVersion:
    """Make ``params`` the current version (pending votes on the old one become evidence)."""
    return _replace_current(client, params, "manual", note, settings)


def record_evaluation(
    client: redis.Redis, evaluation: Evaluation, evaluation_id: str, settings: Settings
) -> str:
    """Add NDCG evidence for a version once, then move best or roll back; says what it did."""
    if not client.set(keys.evaluation_seen(evaluation_id), "1", nx=True,
                      ex=settings.dedupe_ttl_seconds):
        return "duplicate"
    _add_evidence(client, evaluation, settings.min_eval_cases)
    verdict = judge(client, settings)
    # "done" only now: whoever waits on this evaluation then sees best and rollbacks settled
    client.set(keys.evaluation_seen(evaluation_id), "done", keepttl=True)
    return verdict


def judge(client: redis.Redis, settings: Settings) -> str:
    """Point best at the top-scoring version; roll back when current is clearly worse."""
    top = client.zrevrange(keys.SCORES, 0, 0, withscores=True)
    if not top:
        return "recorded"
    best, best_score = int(top[0][0]), float(top[0][1])
    moved = client.getset(keys.PARAMS_BEST, best) != str(best)
    current = current_number(client)
    score = client.zscore(keys.SCORES, current)
    if current != best and score is not None and score < best_score - settings.rollback_margin:
        return _rollback(client, (current, float(score)), (best, best_score), settings)
    return "best-moved" if moved else "recorded"


def score(client: redis.Redis, version: int) -> VersionScore:
    """Cases and mean NDCG reported for ``version``."""
    cases, total = client.hmget(keys.EVALS, [f"{version}:cases", f"{version}:sum"])
    return _score_from(version, int(cases or 0), float(total or 0.0))


def history(client: redis.Redis, limit: int) -> list[tuple[ParamVersion, VersionScore]]:
    """The newest ``limit`` versions still retained, with their scores, newest first."""
    top = current_number(client)
    numbers = list(range(top, max(top - limit, -1), -1))
    pipe = client.pipeline(transaction=False)
    for n in numbers:
        pipe.get(keys.param_version(n))
        pipe.hmget(keys.EVALS, [f"{n}:cases", f"{n}:sum"])
    replies = pipe.execute()
    out = []
    for i, n in enumerate(numbers):
        raw, (cases, total) = replies[2 * i], replies[2 * i + 1]
        record = INITIAL if n == 0 else ParamVersion.model_validate_json(raw) if raw else None
        if record is not None:
            out.append((record, _score_from(n, int(cases or 0), float(total or 0.0))))
    return out


def trajectory(rows: list[tuple[int, str, int, float]]) -> list[str]:
    """Prompt lines for recent versions, from EPISODE_CONTEXT's rows (newest first): NDCG
    and what changed, scored versions ascending so the best comes last, then a revert
    hint when the current version scores well below its parent."""
    lines = []
    for version, raw_brief, cases, total in rows:
        brief = json.loads(raw_brief) if raw_brief else _brief(INITIAL)
        mean = total / cases if cases else None
        ndcg = f"NDCG {mean:.3f} over {cases} cases" if mean is not None else "not evaluated yet"
        lines.append((mean is not None, mean or 0.0, version,
                      f"v{version} ({_describe_brief(brief)}): {ndcg}"))
    lines.sort(key=lambda t: (t[0], t[1], t[2]))
    return [t[3] for t in lines] + _revert_hint(rows)


def _revert_hint(rows: list[tuple[int, str, int, float]]) -> list[str]:
    if not rows or not rows[0][1]:
        return []
    version, raw_brief, cases, total = rows[0]
    parent = json.loads(raw_brief)["parent"]
    before = next(((c, t) for v, _, c, t in rows if v == parent), None)
    if not cases or before is None or not before[0]:
        return []
    now, then = total / cases, before[1] / before[0]
    if now < then - 0.05:
        return [f"NDCG dropped from {then:.3f} (v{parent}) to {now:.3f} (v{version}): "
                "consider reverting the last change"]
    return []


def _score_from(version: int, cases: int, total: float) -> VersionScore:
    return VersionScore(version=version, cases=cases, mean_ndcg=total / cases if cases else None)


def _brief(record: ParamVersion) -> dict[str, Any]:
    return {"parent": record.parent, "reason": record.reason, "factors": record.factors}


def _commit(client: redis.Redis, record: ParamVersion, expected_pending: int,
            settings: Settings) -> int:
    """STEP_VERSION for ``record`` (made from its parent, the current version); a version
    created is due an evaluation on every registered repository."""
    outcome = scripts.step_version(
        client, record.parent or 0, expected_pending,
        (record.version, record.model_dump_json(), json.dumps(_brief(record))),
        record.params.as_floats(), settings.version_retention)
    if outcome == 1:
        # after the compare-and-set: a crash in between leaves the version unmarked, and
        # the beat's evaluation sweep marks the current version again (mark_due is NX)
        evaluations.mark_due(client, record.version)
    return int(outcome)


def _replace_current(client: redis.Redis, params: ParameterPoint, reason: Reason, note: str,
                     settings: Settings) -> ParamVersion:
    for _ in range(STEP_RETRIES):
        current = current_number(client)
        record = ParamVersion(version=current + 1, parent=current, params=params,
                              reason=reason, note=note, created_at=time.time())
        if _commit(client, record, -1, settings) == 1:
            return record
    raise RuntimeError("parameters kept changing; could not set them")


def _add_evidence(client: redis.Redis, evaluation: Evaluation, min_cases: int) -> None:
    v = evaluation.version
    values = evaluation.per_case or [evaluation.mean_ndcg] * evaluation.cases
    pipe = client.pipeline(transaction=True)
    pipe.hincrby(keys.EVALS, f"{v}:cases", evaluation.cases)
    pipe.hincrbyfloat(keys.EVALS, f"{v}:sum", evaluation.mean_ndcg * evaluation.cases)
    pipe.hincrbyfloat(keys.EVALS, f"{v}:sumsq",
                      sum(x * x for x in values) * evaluation.cases / len(values))
    cases, total_sum, _ = pipe.execute()
    if int(cases) >= min_cases:
        client.zadd(keys.SCORES, {str(v): float(total_sum) / int(cases)})


def _rollback(client: redis.Redis, current: tuple[int, float], best: tuple[int, float],
              settings: Settings) -> str:
    bad, good = get(client, current[0]), get(client, best[0])
    if bad is None or good is None:
        return "recorded"
    note = (f"v{current[0]} scored {current[1]:.3f} against best v{best[0]} at "
            f"{best[1]:.3f}: rolled back ({_describe(bad)})")
    record = ParamVersion(version=current[0] + 1, parent=current[0], params=good.params,
                          reason="rollback", note=note, created_at=time.time())
    # one attempt: if the current version moved on meanwhile, this verdict is stale
    if _commit(client, record, -1, settings) != 1:
        return "recorded"
    store.add_insight(client, "signatures", f"change that hurt: {_describe(bad)} lowered "
                      f"NDCG by {best[1] - current[1]:.3f} (rolled back)")
    return "rolled-back"


def _describe(version: ParamVersion) -> str:
    return _describe_brief(_brief(version))


def _describe_brief(brief: dict[str, Any]) -> str:
    moved = ", ".join(f"{p} x{f:.2f}" for p, f in brief["factors"].items())
    return f"{brief['reason']} step from v{brief['parent']}: {moved or 'no change'}"
