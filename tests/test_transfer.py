"""Wisdom that transfers: presets learned from evaluations on one repository, conditioned
on repository features, recommended for a similar repository and not a dissimilar one.

Real Redis, real git fixture repositories, the reference ranker, the CLI as a subprocess."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from bench.transfer import learn
from ops.http import create_app
from ops.loop import warm_start
from ranker import open_repository
from ranker.features import repository_features
from ranker.index import cache_path as index_cache_path
from schemas.features import RepoFeatures
from schemas.params import PARAM_SPECS, ParameterPoint
from schemas.repos import RegisteredRepo, RepoEvaluation, SplitScore
from schemas.settings import Settings
from schemas.wisdom import (
    NEAR_MATCH,
    Preset,
    PresetEvidence,
    RobustSelection,
    Wisdom,
    WisdomDraft,
    recommend,
)
from state import evaluations, store, versions
from state import presets as presets_state
from tests.factories import episode
from tests.gitrepos import DAY, EPOCH, Plan, build_fixture, commit, init
from tests.services import worker_env
from worker import distill, reducer
from worker import presets as presets_mod
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


# the first is the best of these on alpha's tuning cases, the second on similar's
TWO = (ParameterPoint(pagerank_alpha=0.2, boost_temporal_coupling=30.0,
                      boost_mentioned_ident=30.0),
       ParameterPoint(pagerank_alpha=0.2, boost_temporal_coupling=100.0,
                      boost_mentioned_ident=30.0))


def learn_on_two(client: redis.Redis, settings: Settings, repos: dict[str, Path]) -> Wisdom:
    """The defaults and the points of ``TWO`` evaluated on ``alpha`` and ``similar``; the
    deep-js repository is never registered (the left-out one)."""
    for name in ("alpha", "similar"):
        evaluations.add_repo(client, RegisteredRepo(name=name, path=str(repos[name])))
        _score(client, settings, name, 0)
    for point in TWO:
        record = versions.set_manual(client, point, "test", settings)
        for name in ("alpha", "similar"):
            _score(client, settings, name, record.version)
    reducer.merge(client, episode(1), settings)
    assert distill.distill(client, settings, HeuristicReasoner(), force=True).status == "distilled"
    wisdom = store.latest_wisdom(client)
    assert wisdom is not None
    return wisdom


def _bests_by_hand(client: redis.Redis) -> dict[str, tuple[int, ParameterPoint, float]]:
    """Each registered repository's best version by its recorded tuning NDCG, and its gain
    over the defaults there (from the stored evaluations, without ``worker.presets``)."""
    out = {}
    for name in ("alpha", "similar"):
        rows = {r.version: r.tuning.ndcg for r in evaluations.results(client) if r.repo == name}
        best = max(sorted(rows), key=lambda v: rows[v])
        record = versions.get(client, best)
        assert record is not None
        out[name] = (best, record.params, rows[best] - rows[0])
    return out


def test_the_robust_preset_is_the_construction_that_transferred_best_in_training(
        client: redis.Redis, data_settings: Settings, repos: dict[str, Path],
        tmp_path: Path) -> None:
    wisdom = learn_on_two(client, data_settings, repos)
    robust = next(p for p in wisdom.presets if p.name == "robust")
    assert wisdom.presets[0] is robust and robust.cross_repository
    assert isinstance(robust.selection, RobustSelection)
    assert robust.selection.repos == ["alpha", "similar"]
    bests = _bests_by_hand(client)
    assert {n: p for n, (_, p, _) in bests.items()} == {"alpha": TWO[0], "similar": TWO[1]}
    # recompute every construction's leave-one-out transfer independently, on freshly
    # opened indexes: with two training repositories, the point built without T is the
    # other one's best (its best and its consensus alike), shrunk by the factor
    opened = {n: open_repository(repos[n], tmp_path / "fresh") for n in ("alpha", "similar")}

    def gain(name: str, point: ParameterPoint) -> float:
        repo = opened[name]
        return repo.evaluate(point, "tuning").ndcg - repo.evaluate(DEFAULTS, "tuning").ndcg

    def scaled(point: ParameterPoint, factor: float) -> ParameterPoint:
        return point if factor == 1.0 else presets_mod.shrink(point, factor)

    other = {"alpha": "similar", "similar": "alpha"}
    top = max(("alpha", "similar"), key=lambda n: bests[n][2])
    both = presets_mod.consensus([TWO[0], TWO[1]])
    transfer: dict[str, dict[str, float]] = {}
    final: dict[str, ParameterPoint] = {}
    for source in ("best", "consensus"):
        for factor in (1.0, 0.75, 0.5, 0.25):
            label = f"{source} ×{factor:g}"
            transfer[label] = {t: gain(t, scaled(bests[other[t]][1], factor))
                               for t in ("alpha", "similar")}
            final[label] = scaled(bests[top][1] if source == "best" else both, factor)
    listed = {c.label: c for c in robust.selection.candidates}
    assert set(listed) == set(transfer)
    for label, by_repo in transfer.items():
        c = listed[label]
        assert c.worst_gain == pytest.approx(min(by_repo.values()), abs=1e-6)
        assert c.mean_gain == pytest.approx(sum(by_repo.values()) / 2, abs=1e-6)
        assert {(t.repo, tuple(t.built_from)) for t in c.transfers} == {
            ("alpha", ("similar",)), ("similar", ("alpha",))}
        for t in c.transfers:
            assert t.gain == pytest.approx(by_repo[t.repo], abs=1e-6)
            assert t.low <= t.gain <= t.high

    # the chosen construction is the argmax of the worst-case transfer (then the mean, then
    # the final point nearer to the defaults)
    def size(point: ParameterPoint) -> float:
        return sum(abs(math.log(max(v, PARAM_SPECS[k].floor) / PARAM_SPECS[k].default))
                   for k, v in point.as_floats().items())

    argmax = max(transfer, key=lambda lb: (round(min(transfer[lb].values()), 9),
                                           round(sum(transfer[lb].values()), 9),
                                           -size(final[lb])))
    assert min(transfer[argmax].values()) > presets_mod.MIN_GAIN
    assert robust.selection.chosen == argmax
    # the preset is that construction built from both training repositories
    assert robust.params == final[argmax]
    # its evidence: the chosen construction's transfer to each training repository, built
    # from the other only, with the paired tuning interval; held-out beside it for the reader
    assert {(e.repo, tuple(e.transfer_from)) for e in robust.evidence} == {
        ("alpha", ("similar",)), ("similar", ("alpha",))}
    factor = float(argmax.split("×")[1])
    for e in robust.evidence:
        assert e.measured_at_distillation and e.learned_here
        assert e.tuning_effect == pytest.approx(transfer[argmax][e.repo], abs=1e-6)
        assert e.tuning_low is not None and e.tuning_high is not None
        assert e.tuning_low <= e.tuning_effect <= e.tuning_high
        point = scaled(bests[other[e.repo]][1], factor)
        heldout = opened[e.repo].evaluate(point, "heldout").ndcg - opened[e.repo].evaluate(
            DEFAULTS, "heldout").ndcg
        assert e.heldout_effect == pytest.approx(heldout, abs=1e-6)
        assert e.features is not None
    text = wisdom.to_markdown()
    assert f"chosen across alpha, similar: {argmax}" in text and "built from similar only" in text
    rec = recommend([robust], repository_features(opened["similar"]))
    assert rec is not None and rec.preset == robust
    assert "worst-case leave-one-out transfer gain between the training repositories" \
        in rec.reason
    assert rec.expected_effect == pytest.approx(
        sum(e.heldout_effect for e in robust.evidence) / 2)
    # the stored wisdom round-trips with the new fields
    assert Wisdom.model_validate_json(wisdom.model_dump_json()) == wisdom


def test_the_best_construction_takes_the_best_with_the_largest_own_gain() -> None:
    a = presets_mod.Best("a", 3, TWO[0], 0.02)
    b = presets_mod.Best("b", 5, TWO[1], 0.05)
    best = presets_mod.Construction("best", 1.0)
    assert best.build([a, b]).point == TWO[1] and best.build([a, b]).label == "b v5"
    assert best.build([a]).point == TWO[0]  # leave b out: a's
    assert presets_mod.Construction("consensus", 1.0).build([a]).point == TWO[0]
    half = presets_mod.Construction("consensus", 0.5).build([a, b])
    assert half.label == "consensus of a v3, b v5 ×0.5"
    assert half.point == presets_mod.shrink(presets_mod.consensus([TWO[0], TWO[1]]), 0.5)


def test_no_robust_preset_when_nothing_transfers_between_the_training_repositories() -> None:
    def scored(label: str, gains: tuple[float, float]) -> presets_mod.CrossScored:
        c = presets_mod.Candidate(label, TWO[0])
        return presets_mod.CrossScored(
            presets_mod.Construction("best", 1.0),
            tuple(presets_mod.Transfer(r, (o,), c, g, g - 0.01, g + 0.01)
                  for r, o, g in zip(("a", "b"), ("b", "a"), gains, strict=True)), c)

    assert presets_mod.select([scored("x", (0.05, -0.002)), scored("y", (0.0005, 0.03))]) is None
    chosen = presets_mod.select([scored("x", (0.05, -0.002)), scored("y", (0.004, 0.003))])
    assert chosen is not None and chosen.worst == 0.003


def test_shrinkage_and_consensus_candidates_are_bounded_parameter_points() -> None:
    extreme = ParameterPoint(pagerank_alpha=0.05, boost_temporal_coupling=1000.0,
                             depth_weight_vendor=0.0, focus_decay=1.0,
                             git_recency_decay_days=3650.0)
    other = ParameterPoint(pagerank_alpha=0.5, boost_temporal_coupling=12.0,
                           depth_weight_vendor=0.02, focus_decay=0.25)
    bests = [presets_mod.Best("a", 3, extreme, 0.05), presets_mod.Best("b", 5, other, 0.01)]
    options = [c.build(bests) for c in presets_mod.CONSTRUCTIONS]
    assert [c.label for c in presets_mod.CONSTRUCTIONS] == [
        f"{s} ×{f:g}" for s in ("best", "consensus") for f in (1, 0.75, 0.5, 0.25)]
    assert len({c.point for c in options}) == 8 and DEFAULTS not in {c.point for c in options}
    # the best is kept as evaluated; what distillation makes is inside each parameter's
    # safe range (so inside its valid bounds), and a valid ParameterPoint
    assert options[0].point == extreme and options[0].label == "a v3"
    for c in options:
        assert ParameterPoint.model_validate(c.point.as_floats()) == c.point
        if c.label == "a v3":
            continue
        for name, value in c.point.as_floats().items():
            spec = PARAM_SPECS[name]
            assert spec.floor <= value <= spec.ceiling, (c.label, name, value)
    # shrinking keeps each parameter between the defaults and the point, in log space
    half = presets_mod.shrink(extreme, 0.5)
    assert half.pagerank_alpha == pytest.approx((0.85 * 0.05) ** 0.5)
    assert half.boost_temporal_coupling == pytest.approx((3.0 * 1000.0) ** 0.5)
    assert half.depth_weight_vendor == pytest.approx((0.01 * 0.0001) ** 0.5)  # 0 as its floor
    assert presets_mod.shrink(extreme, 0.0) == DEFAULTS
    # the consensus: the mean log move where the repositories agree, none where they don't
    both = presets_mod.consensus([extreme, other])
    assert both.pagerank_alpha == pytest.approx((0.05 * 0.5) ** 0.5)  # both down
    assert both.boost_temporal_coupling == pytest.approx((1000.0 * 12.0) ** 0.5)  # both up
    assert both.depth_weight_vendor == DEFAULTS.depth_weight_vendor  # down and up: dropped
    assert both.focus_decay == DEFAULTS.focus_decay  # up and down: dropped
    # one moved, the other left it: half the move
    assert both.git_recency_decay_days == pytest.approx(30.0 * (3650.0 / 30.0) ** 0.5)


_WATCH: list[list[str]] = []  # while non-empty, the audit hook records opened paths here


def _audit(event: str, args: tuple[object, ...]) -> None:
    if not _WATCH:
        return
    if event == "open" and args and isinstance(args[0], str | bytes | Path):
        _WATCH[-1].append(str(args[0]))
    elif event == "subprocess.Popen" and isinstance(args[1], list | tuple):
        _WATCH[-1].append(" ".join(str(a) for a in args[1]))


def test_nothing_of_a_left_out_repository_is_used(
        client: redis.Redis, data_settings: Settings, repos: dict[str, Path],
        tmp_path: Path) -> None:
    """The benchmark's fold: the service's loop learns on two fixture repositories, each
    separately; the third (deep-js) is opened only to be recommended for, after the presets
    exist."""
    training = {n: open_repository(repos[n], data_settings.data_dir / "ranker")
                for n in ("alpha", "similar")}
    presets, _ = learn(client, data_settings, training, seed=0, goal=4)
    assert {r.name for r in evaluations.repos(client)} == {"alpha", "similar"}
    assert {r.repo for r in evaluations.results(client)} == {"alpha", "similar"}
    # each learned separately: every version but the defaults was evaluated on one only,
    # the one it was learned on
    for v in {r.version for r in evaluations.results(client)} - {0}:
        [only] = [r.repo for r in evaluations.results(client) if r.version == v]
        record = versions.get(client, v)
        assert record is not None and f"learned on {only} alone" in record.note
    assert set(presets_state.features(client)) == {"alpha", "similar"}
    for p in presets:
        assert {e.repo for e in p.evidence} <= {"alpha", "similar"}
        assert {r for e in p.evidence for r in e.transfer_from} <= {"alpha", "similar"}
        if p.selection is not None:
            assert p.selection.repos == ["alpha", "similar"]
            assert {r for c in p.selection.candidates for t in c.transfers
                    for r in (t.repo, *t.built_from)} <= {"alpha", "similar"}
    # the same distillation again, with the left-out repository's index built meanwhile
    # in the same cache, chooses the same presets, and opens nothing of it: no file of its
    # checkout or of its cached index, no git command on it (a Python audit hook records
    # every file opened and every process started meanwhile)
    cache = data_settings.data_dir / "ranker"
    open_repository(repos["deep-js"], cache)
    left_out = (str(repos["deep-js"]), str(repos["deep-js"].resolve()),
                str(index_cache_path(cache, repos["deep-js"]).parent))
    sys.addaudithook(_audit)
    _WATCH.append([])
    try:
        again = presets_mod.build(client, data_settings)
    finally:
        seen = _WATCH.pop()
    assert [(p.name, p.params) for p in again] == [(p.name, p.params) for p in presets]
    assert not [s for s in seen if any(x in s for x in left_out)], seen
    # the hook does see what distillation reads: the training repositories' HEADs
    assert any(str(repos["alpha"]) in s and "rev-parse" in s for s in seen), seen

def test_whatever_selection_a_reasoner_writes_is_dropped() -> None:
    """Only measurements carry a condition, evidence or selection: a reasoner's preset
    claiming one keeps its prose and loses them (so it is never taken as cross-repository)."""
    forged = Preset(
        name="mine", params=TWO[0], when_to_use="trust me",
        condition=presets_mod.condition_for([_features("python", 100)]),
        evidence=[_row_evidence()],
        selection=RobustSelection(rule="made up", repos=["x"], chosen="best ×1"))
    assert forged.cross_repository
    merged = distill.with_measured_presets(WisdomDraft(presets=[forged]), [])
    [kept] = merged.presets
    assert (kept.name, kept.params, kept.when_to_use) == ("mine", TWO[0], "trust me")
    assert kept.condition is None and kept.evidence == [] and kept.selection is None
    assert not kept.cross_repository


def _row_evidence() -> PresetEvidence:
    return PresetEvidence(repo="x", version=1, baseline_version=0, learned_here=True,
                          tuning_effect=0.5, heldout_effect=0.5, heldout_ndcg=0.9,
                          measured_at_distillation=True)



def test_recommend_prefers_the_robust_preset_unless_a_specific_one_is_a_near_twin() -> None:
    params = {0: DEFAULTS, 1: BETTER["alpha"], 2: BETTER["coupling"]}
    rows = [_row(0, "py", 0.50, 0.40), _row(0, "rs", 0.60, 0.50),
            _row(1, "py", 0.52, 0.41), _row(1, "rs", 0.61, 0.52),
            _row(2, "py", 0.56, 0.43), _row(2, "rs", 0.55, 0.45)]
    features = {"py": _features("python", 200), "rs": _features("rust", 60)}
    broad, for_py = presets_from(rows, params, features)
    robust = broad.model_copy(update={
        "name": "robust", "params": presets_mod.shrink(params[1], 0.5),
        "evidence": [e.model_copy(update={"measured_at_distillation": True})
                     for e in broad.evidence],
        "selection": RobustSelection(rule="worst case", repos=["py", "rs"],
                                     chosen="py v1 ×0.5")})
    # a selection without evidence measured at distillation (as a reasoner might write) is
    # inert
    assert robust.cross_repository
    assert not broad.model_copy(update={"selection": robust.selection}).cross_repository
    presets = [robust, broad, for_py]
    # a near twin of py (distance <= NEAR_MATCH): py's own preset
    twin = _features("python", 180)
    assert for_py.distance(twin) <= NEAR_MATCH
    near = recommend(presets, twin)
    assert near is not None and near.preset is not None and near.preset.name == "for-py"
    assert "near twin" in near.reason
    # a Python repository of another size: the cross-repository preset
    other = _features("python", 700)
    assert for_py.condition is not None
    assert for_py.distance(other) > NEAR_MATCH and not for_py.condition.mismatches(other)
    far = recommend(presets, other)
    assert far is not None and far.preset is not None and far.preset.name == "robust"
    assert "cross-repository preset" in far.reason and "nearest: for-py" in far.reason
    # without a robust preset, the nearest as before
    old = recommend([broad, for_py], other)
    assert old is not None and old.preset is not None and old.preset.name == "for-py"


@pytest.fixture(autouse=True)
def _no_stray_params(tmp_path: Path) -> Iterator[None]:
    yield
    assert not (tmp_path / "params.json").exists()
