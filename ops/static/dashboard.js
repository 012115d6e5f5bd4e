// The dashboard's and the report's script (ops/dashboard.py serves or inlines it).
"use strict";
// settings from a JSON data block: no inline script, so the Content-Security-Policy can
// allow only the dashboard's own script files (ops/dashboard.py)
const CONFIG = JSON.parse(document.getElementById("config").textContent);
const LIVE = CONFIG.live;
const TOKEN = CONFIG.token;
const charts = {};
window.ripmapCharts = charts;
const palette = ["#2f6fde", "#d64545", "#1f9d55", "#c77d12", "#7b4fd6", "#0e8fa3", "#b8406e",
  "#5b7a1f", "#8a5a2b", "#3d4f9f", "#a1a1a1", "#d14fb0", "#2b8a6a", "#9f6b00", "#4f7fbf",
  "#b85c5c", "#607080"];

function chart(id, config) {
  if (charts[id]) {
    charts[id].data = config.data;
    charts[id].update("none");
  } else {
    config.options = Object.assign({ responsive: true, maintainAspectRatio: false,
      animation: false }, config.options || {});
    charts[id] = new Chart(document.getElementById(id), config);
  }
  document.getElementById(id).dataset.points = String(config.data.labels.length);
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function table(id, header, rows) {
  const t = document.getElementById(id);
  t.replaceChildren();
  const head = t.createTHead().insertRow();
  header.forEach(([label, cls]) => { const th = document.createElement("th");
    th.textContent = label; if (cls) th.className = cls; head.appendChild(th); });
  const body = t.createTBody();
  if (!rows.length) { cell(body.insertRow(), "none yet", "empty").colSpan = header.length; }
  rows.forEach((values) => { const r = body.insertRow();
    values.forEach(([v, cls]) => cell(r, v, cls)); });
}

function trend(item) {
  const d = item.recent_share - item.overall_share;
  if (Math.abs(d) < 0.05) return ["→", "num flat"];
  return d > 0 ? ["↑ " + Math.round(item.recent_share * 100) + "%", "num up"]
               : ["↓ " + Math.round(item.recent_share * 100) + "%", "num down"];
}

function drawNdcg(d) {
  const v = d.versions;
  chart("ndcg", { type: "line", data: {
    labels: v.map((p) => "v" + p.version),
    datasets: [{ label: "mean NDCG", data: v.map((p) => p.mean_ndcg), spanGaps: true,
      borderColor: "#2f6fde", backgroundColor: "#2f6fde",
      pointStyle: v.map((p) => p.is_best ? "star" : p.reason === "rollback" ? "crossRot" : "circle"),
      pointRadius: v.map((p) => p.is_best ? 10 : p.reason === "rollback" ? 8 : 3),
      pointBorderColor: v.map((p) => p.reason === "rollback" ? "#d64545" : "#2f6fde") }] },
    options: { scales: { y: { suggestedMin: 0, suggestedMax: 1 } }, plugins: { tooltip: {
      callbacks: { afterLabel: (c) => { const p = v[c.dataIndex];
        return p.reason + " from v" + p.parent + " · " + p.cases + " cases · " +
          Object.entries(p.factors).map(([k, f]) => k + " ×" + f.toFixed(2)).join(", "); } } } } } });
}

function drawEvaluations(d) {
  const ev = d.evaluations || [];
  const labels = [...new Set(ev.map((e) => e.version))].sort((a, b) => a - b);
  const repos = [...new Set(ev.map((e) => e.repo))].sort();
  const series = (repo, i, split) => ({ label: repo + " " + split,
    data: labels.map((v) => { const e = ev.find((x) => x.version === v && x.repo === repo);
      return e ? e[split].ndcg : null; }), spanGaps: true,
    borderColor: palette[i % palette.length], backgroundColor: palette[i % palette.length],
    borderDash: split === "heldout" ? [6, 4] : [], pointRadius: 2 });
  chart("evaluations", { type: "line", data: { labels: labels.map((v) => "v" + v),
    datasets: repos.flatMap((r, i) => [series(r, i, "tuning"), series(r, i, "heldout")]) },
    options: { scales: { y: { suggestedMin: 0, suggestedMax: 1 } } } });
  const t = d.trust;
  document.getElementById("trust").textContent = !t ? "" : t.unevaluated_steps + " of " +
    t.max_unevaluated_steps + " consensus steps taken since the last evaluated version" +
    (t.waiting ? " — votes wait for an evaluation" : "") + " · " + ev.length +
    " evaluations on " + repos.length + " repositories";
}

function drawParams(d) {
  const v = d.versions;
  const names = v.length ? Object.keys(v[0].normalised) : [];
  chart("params", { type: "line", data: { labels: v.map((p) => "v" + p.version),
    datasets: names.map((n, i) => ({ label: n, data: v.map((p) => p.normalised[n]),
      borderColor: palette[i % palette.length], backgroundColor: palette[i % palette.length],
      pointRadius: 1, borderWidth: 1.5 })) },
    options: { scales: { y: { min: 0, max: 1 } }, plugins: { legend: { position: "right",
      labels: { boxWidth: 10, font: { size: 10 } } }, tooltip: { callbacks: {
      label: (c) => c.dataset.label + ": " + v[c.dataIndex].values[c.dataset.label] } } } } });
}

function drawProposals(d) {
  const params = [...new Set(d.proposals.map((c) => c.param))];
  const get = (p, dir) => d.proposals.find((c) => c.param === p && c.direction === dir);
  const series = (dir, sign, color) => ({ label: dir, backgroundColor: color,
    data: params.map((p) => (get(p, dir) || { count: 0 }).count * sign) });
  chart("proposals", { type: "bar", data: { labels: params,
    datasets: [series("increase", 1, "#1f9d55"), series("decrease", -1, "#d64545")] },
    options: { indexAxis: "y", scales: { x: { stacked: true }, y: { stacked: true } },
      plugins: { tooltip: { callbacks: { afterLabel: (c) => { const s = get(c.label,
        c.dataset.label); return s ? "mean confidence " + s.mean_confidence.toFixed(2) : ""; } } } } } });
}

function drawImportance(d) {
  chart("importance", { type: "bar", data: { labels: d.importance.map((i) => i.param),
    datasets: [{ label: "NDCG change per log-unit moved (estimate)",
      data: d.importance.map((i) => i.score),
      backgroundColor: d.importance.map((i) => i.score >= 0 ? "#1f9d55" : "#d64545") }] },
    options: { indexAxis: "y", plugins: { tooltip: { callbacks: { afterLabel: (c) =>
      d.importance[c.dataIndex].steps + " evaluated steps" } } } } });
}

function drawTables(d) {
  for (const kind of ["signatures", "interactions", "structural"]) {
    table(kind, [["insight"], ["count", "num"], ["trend", "num"]],
      d.insights[kind].map((i) => [[i.text], [String(i.count), "num"], trend(i)]));
  }
  const o = d.operations;
  const budget = o.budget_limit ? o.budget_used_today.toLocaleString() + " of " +
    o.budget_limit.toLocaleString() + " tokens today (" +
    Math.max(0, o.budget_limit - o.budget_used_today).toLocaleString() + " left)"
    : o.budget_used_today.toLocaleString() + " tokens today (no cap)";
  const tokens = Object.entries(o.tokens).filter(([k]) => k !== "calls")
    .map(([k, n]) => k.replace(/_tokens$/, "") + " " + n.toLocaleString()).join(", ");
  table("ops", [["what"], ["value", "num"]], [
    [["episodes merged"], [String(o.episodes), "num"]],
    [["episodes per minute (last 10 min)"], [o.episodes_per_minute.toFixed(1), "num"]],
    ...Object.entries(o.queues).map(([q, n]) => [["queue " + q], [String(n), "num"]]),
    [["dead letters"], [String(o.dead_letters), "num"]],
    [["LLM calls"], [String(o.tokens.calls || 0), "num"]],
    [["tokens"], [tokens || "none", "num"]],
    [["budget"], [budget + (o.budget_paused_reason ? " — PAUSED" : ""), "num"]],
  ]);
}

function draw(d) {
  if (!d) return;
  drawNdcg(d); drawEvaluations(d); drawParams(d); drawProposals(d); drawImportance(d); drawTables(d);
  // rendered server-side: model-written HTML escaped, no images, links as plain text
  document.getElementById("wisdom").innerHTML = d.wisdom_html;
  document.getElementById("summary").textContent = "current v" + d.current_version +
    (d.best_version === null ? " · no best yet" : " · best v" + d.best_version) +
    " · wisdom v" + d.wisdom_version;
  document.getElementById("updated").textContent = "as of " +
    new Date(d.generated_at * 1000).toLocaleString();
  document.body.dataset.ready = "1";
}

async function refresh() {
  const query = TOKEN ? "?token=" + encodeURIComponent(TOKEN) : "";
  const r = await fetch("/v1/dashboard/data" + query);
  if (r.ok) draw(await r.json());
  else document.getElementById("updated").textContent = "update failed: HTTP " + r.status;
}

if (LIVE) { refresh(); setInterval(refresh, 5000); }
else { draw(JSON.parse(document.getElementById("data").textContent)); }
