"""Wisdom that transfers: presets learned from evaluations on one repository, conditioned
on repository features, recommended for a similar repository and not a dissimilar one.

Real Redis, real git fixture repositories, the reference ranker, the CLI as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from ops.http import create_app
from ops.loop import warm_start
from ranker import open_repository
from ranker.features import repository_features
from schemas.features import RepoFeatures
from schemas.params import ParameterPoint
from schemas.repos import RegisteredRepo, RepoEvaluation, SplitScore
from schemas.settings import Settings
from schemas.wisdom import Preset, Wisdom, recommend
from state import evaluations, store, versions
from tests.factories import episode
from tests.gitrepos import DAY, EPOCH, Plan, build_fixture, commit, init
from tests.services import worker_env
from worker import distill, reducer
from worker.evaluation import repository, split_score
from worker.presets import presets_from
from worker.reasoners.heuristic import HeuristicReasoner

DEFAULTS = ParameterPoint()
# points that score above the defaults on the fixture's tuning cases (checked below)
BETTER = {
    "alpha": ParameterPoint(pagerank_alpha=0.6),
    "coupling": ParameterPoint(boost_temporal_coupling=DEFAULTS.boost_temporal_coupling * 3),
}


def build_deep_js(repo: Path, modules: int = 40, commits: int = 36) -> Path:
    """A JavaScript repository of a different shape: deep module directories, a vendored
    library, each module calling its neighbour; commits touch two or three modules."""
    init(repo)

    def path(i: int) -> str:
        return f"packages/core/src/lib/group{i % 5}/mod{i}/index.js"

    def source(i: int, revision: int) -> str:
        return (f"// revision {revision}\nfunction fn{i}() {{ fn{(i + 1) % modules}(); "
                f"vendorHelper(); }}\nclass Mod{i} {{}}\n")

    files: dict[str, str | bytes] = {path(i): source(i, 0) for i in range(modules)}
    files["vendor/lib/helper.js"] = "function vendorHelper() { fn0(); }\n"
    files["README.md"] = "# deep\n"
    commit(repo, "Initial import", files, EPOCH)
    for n in range(1, commits + 1):
        touched = [(n * 7 + k * 3) % modules for k in range(2 + n % 2)]
        commit(repo, f"Update fn{touched[0]} and its callers",
               {path(i): source(i, n) for i in touched}, EPOCH + n * DAY)
    return repo


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("transfer")
    return {
        "alpha": build_fixture(root / "alpha", Plan(rounds=5)),
        "similar": build_fixture(root / "similar", Plan(rounds=7, spacing_days=2.0)),
        "deep-js": build_deep_js(root / "deep-js"),
        "plain": root / "plain",
    }


@pytest.fixture
def data_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"data_dir": tmp_path / "data"})


def _score(client: redis.Redis, settings: Settings, name: str, version: int) -> RepoEvaluation:
    """What the evaluation worker records for one version (without pushing failures)."""
    registered = evaluations.get_repo(client, name)
    record = versions.get(client, version)
    assert registered is not None and record is not None
    repo = repository(registered, settings)
    result = RepoEvaluation(version=version, repo=name,
                            tuning=split_score(repo, record.params, "tuning"),
                            heldout=split_score(repo, record.params, "heldout"))
    evaluations.finish(client, result)
    return result


def learn_on_alpha(client: redis.Redis, settings: Settings, path: Path) -> Wisdom:
    """Evaluate the defaults and two better points on ``alpha``, then distill."""
    evaluations.add_repo(client, RegisteredRepo(name="alpha", path=str(path)))
    _score(client, settings, "alpha", 0)
    for point in BETTER.values():
        record = versions.set_manual(client, point, "test", settings)
        _score(client, settings, "alpha", record.version)
    reducer.merge(client, episode(1), settings)
    assert distill.distill(client, settings, HeuristicReasoner(), force=True).status == "distilled"
    wisdom = store.latest_wisdom(client)
    assert wisdom is not None
    return wisdom


def test_the_two_fixture_repositories_have_different_shapes(repos: dict[str, Path],
                                                            tmp_path: Path) -> None:
    alpha = repository_features(open_repository(repos["alpha"], tmp_path))
    deep = repository_features(open_repository(repos["deep-js"], tmp_path))
    assert alpha.dominant_language == "python" and deep.dominant_language == "javascript"
    assert deep.mean_depth > alpha.mean_depth + 2
    assert deep.file_count > alpha.file_count
    assert 0 < alpha.vendored_share < 0.5 and 0 < deep.vendored_share < 0.1
    assert 0 < alpha.co_change_density <= 1
    # history from the tuning side only: 70 % of the window's commits
    assert alpha.history_commits == int(0.7 * (5 * 10 + 1))


def test_distillation_builds_a_conditioned_preset_with_its_evidence(
        client: redis.Redis, data_settings: Settings, repos: dict[str, Path]) -> None:
    wisdom = learn_on_alpha(client, data_settings, repos["alpha"])
    measured = [p for p in wisdom.presets if p.condition is not None]
    assert [p.name for p in measured] == ["for-alpha"]
    preset = measured[0]
    assert preset.params in BETTER.values()
    assert preset.condition is not None and preset.condition.languages == ["python"]
    [evidence] = preset.evidence
    assert evidence.repo == "alpha" and evidence.learned_here and evidence.baseline_version == 0
    assert evidence.tuning_effect > 0.01 and evidence.features is not None
    # the best by tuning NDCG, whatever held-out says
    tuning = {v: r.tuning.ndcg for r in evaluations.results(client) for v in [r.version]}
    assert tuning[evidence.version] == max(tuning.values())
    # the reasoner's prose presets stay, without a condition
    assert {"default", "learned"} <= {p.name for p in wisdom.presets if p.condition is None}
    assert "applies when: dominant language in {python}" in wisdom.to_markdown()


def _cli(redis_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = worker_env(redis_url, RIPMAP_DATA_DIR=str(tmp_path / "data"), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120, check=False)


def test_recommend_picks_the_preset_for_a_similar_repository_not_a_dissimilar_one(
        client: redis.Redis, data_settings: Settings, repos: dict[str, Path], redis_url: str,
        tmp_path: Path) -> None:
    wisdom = learn_on_alpha(client, data_settings, repos["alpha"])
    preset = next(p for p in wisdom.presets if p.condition is not None)

    similar = _cli(redis_url, tmp_path, "recommend", "--repo", str(repos["similar"]),
                   "--output", str(tmp_path / "similar.json"))
    assert similar.returncode == 0, similar.stdout + similar.stderr
    text = " ".join(similar.stdout.split())
    assert "recommended: for-alpha" in text and "why: for-alpha matches" in text
    assert "dominant: python" in text and "mean_depth" in text and "co_change_density" in text
    assert "expected effect: +" in text and "learned on alpha" in text
    written = ParameterPoint.model_validate(json.loads((tmp_path / "similar.json").read_text()))
    assert written == preset.params

    deep = _cli(redis_url, tmp_path, "recommend", "--repo", str(repos["deep-js"]),
                "--output", str(tmp_path / "deep.json"))
    assert deep.returncode == 0, deep.stdout + deep.stderr
    text = " ".join(deep.stdout.split())
    assert "no preset matches" in text and "dominant: javascript" in text
    assert "dominant language javascript is not python" in text
    assert "mean_depth" in text and "is above" in text
    assert "nothing was written" in deep.stderr
    assert not (tmp_path / "deep.json").exists()


def test_recommend_refuses_a_plain_directory_and_says_when_there_is_no_preset(
        client: redis.Redis, repos: dict[str, Path], redis_url: str, tmp_path: Path) -> None:
    plain = repos["plain"]
    plain.mkdir(exist_ok=True)
    (plain / "a.py").write_text("def f(): pass\n")
    run = _cli(redis_url, tmp_path, "recommend", "--repo", str(plain), "--output",
               str(tmp_path / "p.json"))
    assert run.returncode == 2, run.stdout + run.stderr
    assert "not a git repository" in run.stderr and "nothing was written" in run.stderr
    # a git repository, but nothing distilled yet
    run = _cli(redis_url, tmp_path, "recommend", "--repo", str(repos["similar"]), "--output",
               str(tmp_path / "p.json"))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "no preset yet" in run.stderr and "nothing was written" in run.stderr
    assert not (tmp_path / "p.json").exists()


def test_http_recommend_takes_the_features(client: redis.Redis, data_settings: Settings,
                                           repos: dict[str, Path], tmp_path: Path) -> None:
    similar = repository_features(open_repository(repos["similar"], tmp_path))
    deep = repository_features(open_repository(repos["deep-js"], tmp_path))
    with TestClient(create_app(data_settings)) as http:
        assert http.post("/v1/recommend", json=similar.model_dump()).status_code == 404
        learn_on_alpha(client, data_settings, repos["alpha"])
        hit = http.post("/v1/recommend", json=similar.model_dump())
        assert hit.status_code == 200 and hit.json()["matched"] is True
        assert hit.json()["preset"]["name"] == "for-alpha"
        miss = http.post("/v1/recommend", json=deep.model_dump()).json()
        assert miss["matched"] is False and miss["preset"] is None
        assert any("javascript is not python" in m for m in miss["considered"]["for-alpha"])
        bad = http.post("/v1/recommend", json={**similar.model_dump(), "vendored_share": 2})
        assert bad.status_code == 422


def test_tune_warm_start_makes_the_recommended_preset_the_current_version(
        client: redis.Redis, data_settings: Settings, repos: dict[str, Path],
        tmp_path: Path) -> None:
    wisdom = learn_on_alpha(client, data_settings, repos["alpha"])
    preset = next(p for p in wisdom.presets if p.condition is not None)
    versions.set_manual(client, DEFAULTS, "back to the defaults", data_settings)
    record = warm_start(client, data_settings, open_repository(repos["similar"], tmp_path))
    assert record is not None and record.reason == "manual" and "for-alpha" in record.note
    assert versions.current_number(client) == record.version and record.params == preset.params
    # a dissimilar repository keeps the current version
    assert warm_start(client, data_settings, open_repository(repos["deep-js"], tmp_path)) is None
    assert versions.current_number(client) == record.version


def _row(version: int, repo: str, tuning: float, heldout: float) -> RepoEvaluation:
    def split(x: float) -> SplitScore:
        return SplitScore(ndcg=x, low=x, high=x, cases=100, commits=40)
    return RepoEvaluation(version=version, repo=repo, tuning=split(tuning), heldout=split(heldout))


def _features(language: str, files: int) -> RepoFeatures:
    return RepoFeatures(languages={language: 1.0}, file_count=files, mean_depth=1.5,
                        history_commits=800, co_change_density=0.1, vendored_share=0.0)


def test_presets_keep_directions_that_helped_most_repositories_and_where_others_helped() -> None:
    params = {0: DEFAULTS, 1: BETTER["alpha"], 2: BETTER["coupling"]}
    rows = [_row(0, "py", 0.50, 0.40), _row(0, "rs", 0.60, 0.50),
            # v1 helps both a little; v2 helps py a lot and hurts rs
            _row(1, "py", 0.52, 0.41), _row(1, "rs", 0.61, 0.52),
            _row(2, "py", 0.56, 0.43), _row(2, "rs", 0.55, 0.45)]
    features = {"py": _features("python", 200), "rs": _features("rust", 60)}
    presets: list[Preset] = presets_from(rows, params, features)
    assert [p.name for p in presets] == ["broad", "for-py"]
    broad, for_py = presets
    assert broad.params == params[1] and broad.condition is not None
    assert broad.condition.languages == []  # helped in two languages
    assert {e.repo for e in broad.evidence if e.learned_here} == {"py", "rs"}
    assert for_py.params == params[2] and for_py.condition is not None
    assert for_py.condition.languages == ["python"]
    assert [(e.repo, e.learned_here) for e in for_py.evidence] == [("py", True), ("rs", False)]
    assert "hurt on rs" in for_py.when_to_use
    # a Python repository near py gets for-py; a Go one only the broad preset
    near = recommend(presets, _features("python", 180))
    assert near is not None and near.preset is not None and near.preset.name == "for-py"
    go = recommend(presets, _features("go", 100))
    assert go is not None and go.preset is not None and go.preset.name == "broad"
    assert go.considered["for-py"] == ["dominant language go is not python"]
    # nothing that helped anywhere: no preset
    assert presets_from(rows[:2], params, features) == []


@pytest.fixture(autouse=True)
def _no_stray_params(tmp_path: Path) -> Iterator[None]:
    yield
    assert not (tmp_path / "params.json").exists()
