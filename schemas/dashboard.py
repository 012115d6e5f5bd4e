"""What the dashboard and the HTML report show: one snapshot of the optimization."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from schemas.repos import RepoEvaluation
from schemas.scratchpad import ChangeStat

_FROZEN = ConfigDict(frozen=True)


class VersionPoint(BaseModel):
    """One parameter version on the charts."""

    model_config = _FROZEN

    version: int
    parent: int | None
    reason: str
    mean_ndcg: float | None
    cases: int
    is_best: bool
    factors: dict[str, float]
    note: str
    episodes: int
    values: dict[str, float]
    normalised: dict[str, float]  # log position between the parameter's floor and ceiling


class TrendingInsight(BaseModel):
    """An insight with its count, and its share among recent episodes against all retained."""

    model_config = _FROZEN

    text: str
    count: int
    recent_share: float
    overall_share: float


class Importance(BaseModel):
    """An estimate: mean NDCG change of the steps that moved this parameter, weighted by how
    far they moved it (positive: moving it went with gains)."""

    model_config = _FROZEN

    param: str
    score: float
    steps: int


class Operations(BaseModel):
    """Throughput, backlog and cost."""

    model_config = _FROZEN

    episodes: int
    episodes_per_minute: float
    queues: dict[str, int]
    open_batches: int  # sent, not yet merged or dead-lettered
    awaiting_merge: int  # reasoned episodes in the reducer's inbox
    resent_by_ledger: int  # batches the broker lost and the sweep sent again
    dead_letters: int
    tokens: dict[str, int]
    budget_used_today: int
    budget_limit: int
    budget_paused_reason: str


class TrustRegion(BaseModel):
    """How far the parameters moved without evidence, and whether steps wait for it."""

    model_config = _FROZEN

    unevaluated_steps: int
    max_unevaluated_steps: int
    waiting: bool  # votes wait for an evaluation before the next step


class Dashboard(BaseModel):
    """Everything the dashboard draws."""

    model_config = _FROZEN

    generated_at: float
    current_version: int
    best_version: int | None
    versions: list[VersionPoint]
    insights: dict[str, list[TrendingInsight]]
    proposals: list[ChangeStat]
    importance: list[Importance]
    operations: Operations
    wisdom_version: int
    wisdom_html: str
    # the closed loop: every version scored on each registered repository (held-out NDCG
    # for reporting only), and the trust region
    evaluations: list[RepoEvaluation] = []
    trust: TrustRegion | None = None
