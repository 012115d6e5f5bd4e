"""The dashboard and the report: same numbers as the API, offline, and drawn in a browser."""

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ops import dashboard
from ops.embedded import free_port
from schemas.repos import RepoEvaluation, SplitScore
from schemas.settings import Settings
from schemas.versions import Evaluation
from state import evaluations, store, versions
from tests.browser import CHROMIUM, DRIVER, MISSING, chrome
from tests.factories import episode
from tests.services import ROOT, wait_until, worker_env
from worker import distill, reducer
from worker.reasoners.heuristic import HeuristicReasoner


def _populate(client: redis.Redis, settings: Settings) -> Settings:
    s = settings.model_copy(update={"consensus_quorum": 2, "min_eval_cases": 1})
    moves = [("boost_chat_file", "decrease"), ("depth_weight_deep", "increase"),
             ("boost_chat_file", "increase")]
    for i in range(6):
        param, direction = moves[(i // 2) % 3]
        reducer.merge(client, episode(i, answer={
            "proposed_changes": [{"param": param, "direction": direction, "magnitude": "large"}],
            "param_interactions": [f"interaction {i % 2}"], "confidence": 0.8},
            params_version=versions.current_number(client)), s)
        current = versions.current_number(client)
        versions.record_evaluation(client, Evaluation(version=current, mean_ndcg=0.3 + 0.05 * i,
                                                      cases=5), f"ev{i}", s)
        evaluations.finish(client, RepoEvaluation(
            version=current, repo="fixture",
            tuning=SplitScore(ndcg=0.3 + 0.05 * i, low=0.2, high=0.6, cases=5, commits=3),
            heldout=SplitScore(ndcg=0.25 + 0.05 * i, low=0.1, high=0.5, cases=3, commits=2)))
    distill.distill(client, s, HeuristicReasoner())
    return s


def test_collect_matches_the_scratchpad_and_history(client: redis.Redis,
                                                    settings: Settings) -> None:
    s = _populate(client, settings)
    data = dashboard.collect(client, s)
    history = versions.history(client, 100)
    assert [v.version for v in data.versions] == sorted(r.version for r, _ in history)
    assert data.best_version == versions.best_number(client)
    assert sum(v.is_best for v in data.versions) == 1
    summary = store.summary(client, 15)
    assert [(i.text, i.count) for i in data.insights["interactions"]] == [
        (i.text, i.count) for i in summary.interactions]
    assert data.proposals == summary.changes
    assert data.operations.episodes == 6
    assert all(0.0 <= x <= 1.0 for v in data.versions for x in v.normalised.values())
    assert data.evaluations == evaluations.results(client) and data.evaluations
    assert data.trust is not None and data.trust.unevaluated_steps == 0
    assert {i.param for i in data.importance} <= {"boost_chat_file", "depth_weight_deep"}
    assert "Distilled Operator Wisdom" in data.wisdom_html


def test_wisdom_html_escapes_model_written_markup(client: redis.Redis, settings: Settings
                                                  ) -> None:
    assert "<script>" not in dashboard._markdown("# hi\n<script>alert(1)</script>")


def test_report_is_self_contained_and_holds_the_api_numbers(client: redis.Redis,
                                                            settings: Settings) -> None:
    s = _populate(client, settings)
    data = dashboard.collect(client, s)
    page = dashboard.render(data, live=False)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "fetch(\"http" not in page
    assert "Chart.js v4" in page  # the chart library is inlined
    embedded = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert embedded is not None
    assert json.loads(embedded.group(1).replace("<\\/", "</")) == json.loads(
        data.model_dump_json())


@pytest.fixture
def api(redis_url: str, client: redis.Redis, settings: Settings) -> Iterator[str]:
    port = free_port()
    env = worker_env(redis_url, RIPMAP_API_TOKEN="s3cret")
    proc = subprocess.Popen([sys.executable, "-m", "ops.cli", "serve", "--port", str(port)],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _up(url), 30, "API up")
    yield url
    proc.terminate()
    proc.wait(20)


def _up(url: str) -> bool:
    try:
        return urllib.request.urlopen(url + "/healthz", timeout=1).status == 200
    except OSError:
        return False


def test_dashboard_requires_the_token(api: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(api + "/dashboard", timeout=5)
    assert exc.value.code == 401
    with urllib.request.urlopen(api + "/v1/dashboard/data?token=s3cret", timeout=10) as r:
        assert json.load(r)["current_version"] == 0




@pytest.mark.skipif(not (CHROMIUM and DRIVER),
                    reason=MISSING)
def test_dashboard_in_a_real_browser(api: str, client: redis.Redis, settings: Settings,
                                     tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    _populate(client, settings)
    browser = chrome(tmp_path / "profile")
    try:
        browser.get(api + "/dashboard?token=s3cret")
        wait_until(lambda: browser.find_element(By.TAG_NAME, "body").get_attribute(
            "data-ready") == "1", 30, "dashboard drawn")
        points = browser.find_element(By.ID, "ndcg").get_attribute("data-points")
        assert points == str(len(versions.history(client, 100)))
        drawn = browser.execute_script(
            "return window.ripmapCharts.ndcg.data.datasets[0].data.length")
        assert drawn == int(points)
        # the closed loop's chart: tuning and held-out per repository, one point per version
        scored = {r.version for r in evaluations.results(client)}
        assert browser.find_element(By.ID, "evaluations").get_attribute("data-points") == str(
            len(scored))
        assert "consensus steps taken since the last evaluated version" in (
            browser.find_element(By.ID, "trust").text)
        rows = browser.find_elements(By.CSS_SELECTOR, "#interactions tbody tr")
        table = [[td.text for td in r.find_elements(By.TAG_NAME, "td")][:2] for r in rows]
        summary = store.summary(client, 15)
        assert table == [[i.text, str(i.count)] for i in summary.interactions]
        # DASHBOARD_SCREENSHOT_DIR keeps the picture (e.g. for a review); default: tmp
        shot = Path(os.environ.get("DASHBOARD_SCREENSHOT_DIR", tmp_path))
        shot.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(shot / "dashboard.png"))
    finally:
        browser.quit()
