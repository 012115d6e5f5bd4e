"""The dashboard and the HTML report: NDCG per version, parameters, insights, cost."""

from __future__ import annotations

import base64
import hashlib
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
from schemas.dashboard import (
    Dashboard,
    Importance,
    TrendingInsight,
    TrustRegion,
    VersionPoint,
)
from schemas.params import PARAM_NAMES, PARAM_SPECS, ParameterPoint
from schemas.settings import Settings
from schemas.versions import ParamVersion, VersionScore
from state import evaluations, insights, store, versions

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
        evaluations=evaluations.results(client)[-MAX_VERSIONS:],
        trust=TrustRegion(unevaluated_steps=versions.unevaluated_steps(client),
                          max_unevaluated_steps=settings.max_unevaluated_steps,
                          waiting=versions.held_for_evaluation(client, settings)),
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


# The live dashboard's Content-Security-Policy (a header, ops/http_dashboard.py): only its
# own script, style sheet and data requests; images only its own or data: URLs; nothing
# model-written can make the browser fetch anything. No inline script or style: the page
# loads dashboard.js and dashboard.css, and takes its settings from a JSON data block.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
STATIC_ASSETS = {"chart.umd.min.js": "text/javascript", "dashboard.js": "text/javascript",
                 "dashboard.css": "text/css"}


def report_csp(scripts: list[str], styles: list[str]) -> str:
    """The offline report's policy (a ``<meta>`` tag: the file has no server): its inline
    scripts and style sheet by hash, nothing else; no connections (it draws the data it
    carries). Hashes rather than 'unsafe-inline', for styles too: an injected element,
    should escaping ever fail, would match no hash."""
    return ("default-src 'none'; script-src " + " ".join(map(_sha256, scripts)) +
            "; style-src " + " ".join(map(_sha256, styles)) +
            "; img-src 'self' data:; connect-src 'none'; base-uri 'none'; form-action 'none'")


def render(data: Dashboard | None, *, live: bool, token: str = "") -> str:
    """The one-page dashboard: ``live`` polls the API; otherwise a self-contained report."""
    page = _static("dashboard.html")
    if live:
        query = html.escape("?token=" + urllib.parse.quote(token) if token else "")
        csp = ""  # sent as a header
        style = f'<link rel="stylesheet" href="/dashboard/static/dashboard.css{query}">'
        chart = f'<script src="/dashboard/static/chart.umd.min.js{query}"></script>'
        script = f'<script src="/dashboard/static/dashboard.js{query}"></script>'
        payload = "null"
    else:
        css, chart_js, main_js = (_static(n) for n in
                                  ("dashboard.css", "chart.umd.min.js", "dashboard.js"))
        policy = report_csp([chart_js, main_js], [css])
        csp = f'<meta http-equiv="Content-Security-Policy" content="{html.escape(policy)}">\n'
        style, chart, script = (f"<style>{css}</style>", f"<script>{chart_js}</script>",
                                f"<script>{main_js}</script>")
        payload = data.model_dump_json() if data else "null"
    config = json.dumps({"live": live, "token": token})
    # JSON in a data block: every "<" as \u003c, so no text in it can end the block
    return (page.replace("{{CSP}}", csp)
            .replace("{{STYLE}}", style)
            .replace("{{CHART_JS}}", chart)
            .replace("{{SCRIPT}}", script)
            .replace("{{CONFIG}}", config.replace("<", "\\u003c"))
            .replace("{{DATA}}", payload.replace("<", "\\u003c")))


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
    """Model-written markdown as HTML that cannot reach out: raw HTML is escaped, and
    images, links, autolinks and link reference definitions are not parsed, so
    ``![x](http://host/?q=...)`` or ``[x](javascript:...)`` stays visible as plain text
    (URL included) instead of becoming an ``<img>`` the browser fetches or an ``<a>``."""
    md = MarkdownIt("commonmark", {"html": False, "linkify": False})
    return str(md.disable(["image", "link", "autolink", "linkify", "reference"]).render(text))


def _sha256(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


def _static(name: str) -> str:
    return resources.files("ops").joinpath(f"static/{name}").read_text()
