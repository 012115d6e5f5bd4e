"""Parameter versions: consensus steps, NDCG evidence, best tracking and rollback."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

import redis

from schemas.params import ParameterPoint
from schemas.settings import Settings
from schemas.versions import Evaluation, ParamVersion, Reason, VersionScore, Vote
from worker import consensus, keys, scripts, store

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
    """Whether the evaluation with this id has been recorded."""
    return bool(client.exists(keys.evaluation_seen(evaluation_id)))


def try_step(client: redis.Redis, settings: Settings, *, min_votes: int) -> ParamVersion | None:
    """Take the consensus step from the current version if ``min_votes`` votes are pending.

    Concurrent callers race through STEP_VERSION's compare-and-set: exactly one creates
    the next version; the others see the current version moved on and stop.
    """
    for _ in range(STEP_RETRIES):
        current, raw_params, raw_votes = scripts.episode_context(client)
        if len(raw_votes) < max(min_votes, 1):
            return None
        votes = sorted((Vote.model_validate_json(v) for v in raw_votes),
                       key=lambda v: v.episode_id)
        params, factors = consensus.step(store.params_from(raw_params), votes,
                                         settings.max_step_factor)
        record = ParamVersion(version=_next_number(client), parent=current, params=params,
                              reason="consensus", factors=factors, provenance=votes,
                              created_at=time.time())
        outcome = scripts.step_version(client, current, len(raw_votes), record.version,
                                       record.model_dump_json(), params.as_floats())
        if outcome == 1:
            return record
        if outcome == 0:
            return None
    return None


def tick(client: redis.Redis, settings: Settings, *, force: bool = False) -> ParamVersion | None:
    """Step on pending votes that waited past the configured wait (or now, when forced)."""
    since = client.get(keys.PENDING_SINCE)
    if since is None:
        return None
    if not force and time.time() - float(since) < settings.consensus_max_wait_seconds:
        return None
    return try_step(client, settings, min_votes=1)


def set_manual(client: redis.Redis, params: ParameterPoint, note: str) -> ParamVersion:
    """Make ``params`` the current version (pending votes on the old one become evidence)."""
    return _replace_current(client, params, "manual", note)


def record_evaluation(
    client: redis.Redis, evaluation: Evaluation, evaluation_id: str, settings: Settings
) -> str:
    """Add NDCG evidence for a version once, then move best or roll back; says what it did."""
    if not client.set(keys.evaluation_seen(evaluation_id), "1", nx=True,
                      ex=settings.dedupe_ttl_seconds):
        return "duplicate"
    _add_evidence(client, evaluation, settings.min_eval_cases)
    return judge(client, settings)


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
        return _rollback(client, current, best, float(score), best_score)
    return "best-moved" if moved else "recorded"


def score(client: redis.Redis, version: int) -> VersionScore:
    """Cases and mean NDCG reported for ``version``."""
    return _score_from(version, cast(dict[str, str], client.hgetall(keys.evaluations(version))))


def _score_from(version: int, raw: dict[str, str]) -> VersionScore:
    cases = int(raw.get("cases", 0))
    mean = float(raw["sum"]) / cases if cases else None
    return VersionScore(version=version, cases=cases, mean_ndcg=mean)


def history(client: redis.Redis, limit: int) -> list[tuple[ParamVersion, VersionScore]]:
    """The newest ``limit`` versions with their scores, newest first, in two round trips."""
    top = int(client.get(keys.PARAMS_SEQ) or 0)
    numbers = list(range(top, max(top - limit, -1), -1))
    pipe = client.pipeline(transaction=False)
    for n in numbers:
        pipe.get(keys.param_version(n))
        pipe.hgetall(keys.evaluations(n))
    replies = pipe.execute()
    out = []
    for i, n in enumerate(numbers):
        raw, evals = replies[2 * i], replies[2 * i + 1]
        record = INITIAL if n == 0 else ParamVersion.model_validate_json(raw) if raw else None
        if record is not None:
            out.append((record, _score_from(n, evals)))
    return out


def _next_number(client: redis.Redis) -> int:
    return int(client.get(keys.PARAMS_SEQ) or 0) + 1


def _replace_current(client: redis.Redis, params: ParameterPoint, reason: Reason,
                     note: str) -> ParamVersion:
    for _ in range(STEP_RETRIES):
        current = current_number(client)
        record = ParamVersion(version=_next_number(client), parent=current, params=params,
                              reason=reason, note=note, created_at=time.time())
        if scripts.step_version(client, current, -1, record.version, record.model_dump_json(),
                                params.as_floats()) == 1:
            return record
    raise RuntimeError("parameters kept changing; could not set them")


def _add_evidence(client: redis.Redis, evaluation: Evaluation, min_cases: int) -> None:
    values = evaluation.per_case or [evaluation.mean_ndcg] * evaluation.cases
    total = evaluation.mean_ndcg * evaluation.cases
    key = keys.evaluations(evaluation.version)
    pipe = client.pipeline(transaction=True)
    pipe.hincrby(key, "cases", evaluation.cases)
    pipe.hincrbyfloat(key, "sum", total)
    pipe.hincrbyfloat(key, "sumsq", sum(v * v for v in values) * evaluation.cases / len(values))
    cases, total_sum, _ = pipe.execute()
    if int(cases) >= min_cases:
        client.zadd(keys.SCORES, {str(evaluation.version): float(total_sum) / int(cases)})


def _rollback(client: redis.Redis, current: int, best: int, score: float, best_score: float
              ) -> str:
    bad, good = get(client, current), get(client, best)
    if bad is None or good is None:
        return "recorded"
    note = (f"v{current} scored {score:.3f} against best v{best} at {best_score:.3f}: "
            f"rolled back ({_describe(bad)})")
    for _ in range(STEP_RETRIES):
        record = ParamVersion(version=_next_number(client), parent=current, params=good.params,
                              reason="rollback", note=note, created_at=time.time())
        outcome = scripts.step_version(client, current, -1, record.version,
                                       record.model_dump_json(), good.params.as_floats())
        if outcome == 0:
            return "recorded"
        if outcome == 1:
            store.add_insight(client, "signatures", f"change that hurt: {_describe(bad)} lowered "
                              f"NDCG by {best_score - score:.3f} (rolled back)")
            return "rolled-back"
    return "recorded"


def _describe(version: ParamVersion) -> str:
    moved = ", ".join(f"{p} x{f:.2f}" for p, f in version.factors.items())
    return f"{version.reason} step from v{version.parent}: {moved or 'no change'}"


@dataclass(frozen=True)
class TrajectoryLine:
    """One version as the reasoner sees it."""

    version: int
    text: str
    mean_ndcg: float | None


def trajectory(client: redis.Redis, limit: int) -> list[str]:
    """Recent versions with NDCG and what changed, best last (scored ones ascending),
    plus a revert hint when the current version scores well below its parent."""
    recent = history(client, limit)
    lines = []
    for record, sc in recent:
        ndcg = f"NDCG {sc.mean_ndcg:.3f} over {sc.cases} cases" if sc.mean_ndcg is not None \
            else "not evaluated yet"
        lines.append(TrajectoryLine(record.version, f"v{record.version} ({_describe(record)}): "
                                    f"{ndcg}", sc.mean_ndcg))
    lines.sort(key=lambda t: (t.mean_ndcg is not None, t.mean_ndcg or 0.0, t.version))
    return [t.text for t in lines] + _revert_hint(recent)


def _revert_hint(recent: list[tuple[ParamVersion, VersionScore]]) -> list[str]:
    # the newest version is the current one: every new version becomes current
    if not recent or recent[0][0].parent is None:
        return []
    current, now = recent[0]
    before = next((sc for r, sc in recent if r.version == current.parent), None)
    if now.mean_ndcg is None or before is None or before.mean_ndcg is None:
        return []
    if now.mean_ndcg < before.mean_ndcg - 0.05:
        return [f"NDCG dropped from {before.mean_ndcg:.3f} (v{current.parent}) to "
                f"{now.mean_ndcg:.3f} (v{current.version}): consider reverting the last change"]
    return []
