"""The dashboard and the HTML report: NDCG per version, parameters, insights, cost."""

from __future__ import annotations

import html
import json
import math
import time
import urllib.parse
from importlib import resources
from typing import Any

import redis
from markdown_it import MarkdownIt

from ops import monitor
from schemas.dashboard import Dashboard, Importance, TrendingInsight, VersionPoint
from schemas.params import PARAM_NAMES, PARAM_SPECS, ParameterPoint
from schemas.settings import Settings
from schemas.versions import ParamVersion, VersionScore
from state import insights, store, versions

RECENT_EPISODES = 50
MAX_VERSIONS = 500
_KIND_FIELDS = {"interactions": "param_interactions", "structural": "structural_insights"}


def collect(client: redis.Redis, settings: Settings, top_k: int = 15) -> Dashboard:
    """One snapshot of everything the dashboard draws."""
    summary = store.summary(client, top_k)
    history = list(reversed(versions.history(client, MAX_VERSIONS)))
    best = versions.best_number(client)
    wisdom = store.latest_wisdom(client)
    return Dashboard(
        generated_at=time.time(),
        current_version=versions.current_number(client),
        best_version=best,
        versions=[_point(r, s, best) for r, s in history],
        insights=_trending(client, summary.model_dump()),
        proposals=summary.changes,
        importance=importance(history),
        operations=monitor.operations(client, settings),
        wisdom_version=summary.wisdom_version,
        wisdom_html=_markdown(wisdom.to_markdown()) if wisdom else "<p>No wisdom yet.</p>",
    )


def normalise(params: ParameterPoint) -> dict[str, float]:
    """Each value's position between its floor and ceiling, on a log scale (0..1)."""
    out = {}
    for name, value in params.as_floats().items():
        spec = PARAM_SPECS[name]
        lo, hi = math.log(spec.floor), math.log(spec.ceiling)
        out[name] = round((math.log(max(value, spec.floor)) - lo) / (hi - lo), 4)
    return out


def importance(history: list[tuple[ParamVersion, VersionScore]]) -> list[Importance]:
    """Per parameter, the NDCG change of scored steps weighted by how far each moved it."""
    scores = {r.version: s.mean_ndcg for r, s in history}
    values = {r.version: r.params.as_floats() for r, _ in history}
    sums: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in PARAM_NAMES}
    for record, sc in history:
        before = scores.get(record.parent) if record.parent is not None else None
        if sc.mean_ndcg is None or before is None or record.parent not in values:
            continue
        for name in PARAM_NAMES:
            moved = abs(math.log(values[record.version][name] / values[record.parent][name]))
            if moved > 0:
                acc = sums[name]
                acc[0] += moved * (sc.mean_ndcg - before)
                acc[1] += moved
                acc[2] += 1
    return sorted((Importance(param=n, score=round(a / w, 4), steps=int(k))
                   for n, (a, w, k) in sums.items() if w > 0), key=lambda i: -abs(i.score))


def render(data: Dashboard | None, *, live: bool, token: str = "") -> str:
    """The one-page dashboard: ``live`` polls the API; otherwise a self-contained report."""
    page = _static("dashboard.html")
    if live:
        query = "?token=" + urllib.parse.quote(token) if token else ""
        script = f'<script src="/dashboard/static/chart.umd.min.js{html.escape(query)}"></script>'
        payload = "null"
    else:
        script = "<script>" + _static("chart.umd.min.js") + "</script>"
        payload = data.model_dump_json() if data else "null"
    return (page.replace("{{CHART_JS}}", script)
            .replace("{{DATA}}", payload.replace("</", "<\\/"))
            .replace("{{LIVE}}", "true" if live else "false")
            .replace("{{TOKEN}}", json.dumps(token).replace("</", "<\\/")))


def _point(record: ParamVersion, sc: VersionScore, best: int | None) -> VersionPoint:
    return VersionPoint(
        version=record.version, parent=record.parent, reason=record.reason,
        mean_ndcg=sc.mean_ndcg, cases=sc.cases, is_best=record.version == best,
        factors=record.factors, note=record.note, episodes=len(record.provenance),
        values=record.params.as_floats(), normalised=normalise(record.params),
    )


def _trending(client: redis.Redis, summary: dict[str, list[dict[str, object]]]
              ) -> dict[str, list[TrendingInsight]]:
    episodes = store.recent_episodes(client, 1_000)
    out = {}
    for kind in ("signatures", "interactions", "structural"):
        per_episode = [{insights.normalise(t) for t in _texts(e, kind)} for e in episodes]
        rows = []
        for item in summary[kind]:
            norm = insights.normalise(str(item["text"]))
            overall = sum(norm in s for s in per_episode) / max(len(per_episode), 1)
            recent_sets = per_episode[:RECENT_EPISODES]
            recent = sum(norm in s for s in recent_sets) / max(len(recent_sets), 1)
            rows.append(TrendingInsight(text=str(item["text"]), count=int(str(item["count"])),
                                        recent_share=round(recent, 3),
                                        overall_share=round(overall, 3)))
        out[kind] = rows
    return out


def _texts(episode: dict[str, Any], kind: str) -> list[str]:
    if kind == "signatures":
        return [str(t) for t in episode.get("failure_signatures", [])]
    return [str(t) for t in episode.get("answer", {}).get(_KIND_FIELDS[kind], [])]


def _markdown(text: str) -> str:
    # model-written text: raw HTML in it is escaped, never rendered
    return str(MarkdownIt("commonmark", {"html": False}).render(text))


def _static(name: str) -> str:
    return resources.files("ops").joinpath(f"static/{name}").read_text()
