"""The ranker on a fixture repository built with git: parameters, ties, leakage, reuse."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ranker import Repository, RepositoryError, open_repository, paired_interval
from ranker.depth import VENDOR, depth_class, is_vendored
from schemas.failures import RankingFailure
from schemas.params import PARAM_NAMES, PARAM_SPECS, ParameterPoint
from tests.gitrepos import Plan, add_commit, build_fixture, commit, git, init

DEFAULTS = ParameterPoint()


@pytest.fixture(scope="module")
def fixture_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture(tmp_path_factory.mktemp("fixture") / "repo")


@pytest.fixture(scope="module")
def repo(fixture_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Repository:
    return open_repository(fixture_repo, tmp_path_factory.mktemp("cache"))


def test_repository_facts(repo: Repository) -> None:
    assert repo.name == "repo"
    assert repo.languages == {"javascript": 1, "python": 19, "rust": 1}
    assert repo.untagged_files == 2  # README.md, docs/guide.md
    assert repo.skipped_files == 1  # src/pkg/blob.py holds a NUL byte
    assert repo.file_count == 23
    assert repo.case_counts == {"tuning": 94, "heldout": 46}


@pytest.mark.parametrize("name", [n for n in PARAM_NAMES if n != "boost_chat_file"])
def test_each_parameter_moves_some_ranking(repo: Repository, name: str) -> None:
    spec = PARAM_SPECS[name]
    base = repo.rankings(DEFAULTS)
    moved = [repo.rankings(DEFAULTS.model_copy(update={name: v}))
             for v in (spec.floor, spec.ceiling)]
    assert any(m != base for m in moved), f"{name} changed no ranking"


def test_boost_chat_file_is_inert_by_construction(repo: Repository) -> None:
    # it multiplies only the seed's score, and the seed is left out of the ranked list
    spec = PARAM_SPECS["boost_chat_file"]
    base = repo.rankings(DEFAULTS)
    for value in (spec.floor, spec.ceiling):
        assert repo.rankings(DEFAULTS.model_copy(update={"boost_chat_file": value})) == base


def test_sensitivity_names_only_the_inert_parameter(repo: Repository) -> None:
    report = repo.sensitivity(DEFAULTS)
    assert report.inert == ("boost_chat_file",)
    alpha = next(e for e in report.effects if e.name == "pagerank_alpha")
    assert (alpha.low_value, alpha.high_value) == (0.5, 0.95)
    assert report.baseline.ndcg == repo.evaluate(DEFAULTS).ndcg


def test_ndcg_matches_rankings_by_hand(repo: Repository) -> None:
    ev = repo.evaluate(DEFAULTS)
    for case, ranked, got in zip(repo.cases(), repo.rankings(DEFAULTS), ev.per_case,
                                 strict=True):
        paths = repo.paths(case)
        rel = dict(zip([paths[n] for n in case.expected], case.relevance, strict=True))
        dcg = sum(rel.get(p, 0.0) / np.log2(i + 2) for i, p in enumerate(ranked[:10]))
        ideal = sum(r / np.log2(i + 2) for i, r in enumerate(sorted(rel.values())[::-1][:10]))
        assert got == pytest.approx(dcg / ideal, abs=1e-12)
        assert paths[case.seed] not in ranked


def test_ties_are_broken_by_path(repo: Repository) -> None:
    scores = repo.scores(DEFAULTS)
    batch = repo.index.batches["tuning"]
    tied = 0
    for c, ranked in enumerate(repo.rankings(DEFAULTS)):
        paths = repo.paths(batch.cases[c])
        a, b = paths.index("src/pkg/plugins/alpha.py"), paths.index("src/pkg/plugins/beta.py")
        row = scores[batch.case_ptr[c]:batch.case_ptr[c + 1]]
        if row[a] == row[b] and paths[a] in ranked:
            tied += 1
            assert ranked.index(paths[a]) + 1 == ranked.index(paths[b])
    assert tied > 10


def test_vendor_matching_is_by_path_component(repo: Repository) -> None:
    assert not is_vendored("targets.py")
    assert is_vendored("lib/target/gen.rs")
    assert not is_vendored("src/vendors/x.py")
    assert depth_class("a/node_modules/b.js") == VENDOR
    graph = repo.index.graphs[repo.cases()[0].tree]
    depth = dict(zip(graph.paths, graph.depth.tolist(), strict=True))
    assert depth["vendor/markup/escape.py"] == VENDOR and depth["targets.py"] != VENDOR


def test_evaluation_has_interval_and_split(repo: Repository) -> None:
    for split in ("tuning", "heldout", "all"):
        ev = repo.evaluate(DEFAULTS, split)
        assert ev.split == split
        assert ev.low <= ev.ndcg <= ev.high and 0 < ev.ndcg < 1
    assert repo.evaluate(DEFAULTS, "all").cases == sum(repo.case_counts.values())


def test_same_input_same_output(repo: Repository, fixture_repo: Path, tmp_path: Path) -> None:
    first = repo.evaluate(DEFAULTS, "heldout").as_dict()
    assert repo.evaluate(DEFAULTS, "heldout").as_dict() == first
    fresh = open_repository(fixture_repo, tmp_path)
    loaded = open_repository(fixture_repo, tmp_path)
    assert fresh.index.parsed_blobs > 0 and loaded.index.parsed_blobs == 0
    for other in (fresh, loaded):
        assert other.evaluate(DEFAULTS, "heldout").as_dict() == first
        assert other.sensitivity(DEFAULTS).as_dict() == repo.sensitivity(DEFAULTS).as_dict()


def test_results_do_not_depend_on_alphas_solved_before(fixture_repo: Path,
                                                       tmp_path: Path) -> None:
    point = DEFAULTS.model_copy(update={"pagerank_alpha": 0.77})
    fresh = open_repository(fixture_repo, tmp_path).evaluate(point, "all")
    warmed = open_repository(fixture_repo, tmp_path)
    # neighbours first (as an optimizer moves), then far ones, then enough to evict 0.77
    for alpha in (0.76, 0.78, 0.771, 0.5, 0.95, 0.3, 0.99):
        warmed.evaluate(point.model_copy(update={"pagerank_alpha": alpha}), "all")
    after = [warmed.evaluate(point, "all")]
    for alpha in np.linspace(0.1, 0.9, 9):
        warmed.evaluate(point.model_copy(update={"pagerank_alpha": float(alpha)}), "all")
    after.append(warmed.evaluate(point, "all"))  # solved again after eviction
    for ev in after:
        assert json.dumps(ev.as_dict()) == json.dumps(fresh.as_dict())
        np.testing.assert_allclose(ev.per_case, fresh.per_case, atol=1e-9, rtol=0)


def test_failures_are_ranking_failures(repo: Repository) -> None:
    failures = repo.failures(DEFAULTS, limit=3, params_version=7)
    ev = repo.evaluate(DEFAULTS)
    assert len(failures) == min(3, int((ev.per_case < 0.5).sum())) > 0
    for f in failures:
        assert isinstance(f, RankingFailure) and f.ndcg < 0.5 and f.params_version == 7
        assert f.seed_file not in f.actual_top and len(f.actual_top) == 10
        assert f.repo_context.name == "repo" and f.repo_context.file_count == 23
        RankingFailure.model_validate_json(f.model_dump_json())


def test_paired_interval(repo: Repository) -> None:
    a = repo.evaluate(DEFAULTS).per_case
    b = repo.evaluate(DEFAULTS.model_copy(update={"focus_decay": 1.0})).per_case
    assert paired_interval(a, a, repo, "tuning") == (0.0, 0.0, 0.0)
    diff, low, high = paired_interval(a, b, repo, "tuning")
    meta = repo.case_meta("tuning")
    assert diff == pytest.approx(meta.weighted_mean(a) - meta.weighted_mean(b))
    assert low <= diff <= high


def _features(repo: Repository, split: str = "tuning") -> list[tuple[object, ...]]:
    rows = []
    for case in repo.cases(split):  # type: ignore[arg-type]
        paths = repo.paths(case)
        arrays = (case.mentioned_ident, case.mentioned_file, case.coupled, case.hops,
                  case.days, case.changes)
        rows.append((case.subject, case.quality, paths, paths[case.seed],
                     tuple(paths[n] for n in case.expected), tuple(case.relevance),
                     *(tuple(a.tolist()) for a in arrays)))
    return rows


def test_held_out_commits_do_not_leak_into_tuning(tmp_path: Path, repo: Repository) -> None:
    last = len(Plan().commits()) - 1
    swapped = Plan(overrides={last: Plan().commits()[last - 1], last - 1: Plan().commits()[last]})
    changed = Plan(overrides={last: ("Rewrite checksum and Cache",
                                     ("src/pkg/cache.py", "src/pkg/io/codec/impl/fast/crc.py"))})
    base = _features(repo)
    for n, plan in enumerate((swapped, changed)):
        other = open_repository(build_fixture(tmp_path / f"r{n}", plan), tmp_path / f"c{n}")
        assert _features(other) == base
        assert _features(other, "heldout") != _features(repo, "heldout")
        assert np.array_equal(other.evaluate(DEFAULTS).per_case,
                              repo.evaluate(DEFAULTS).per_case)


def test_new_commits_parse_only_new_blobs(tmp_path: Path) -> None:
    path = build_fixture(tmp_path / "repo")
    first = open_repository(path, tmp_path / "cache")
    add_commit(path, "Fix parse_config again", ("src/pkg/util.py", "tests/test_util.py"), 90)
    again = open_repository(path, tmp_path / "cache")
    assert first.index.parsed_blobs > 20
    assert again.index.parsed_blobs == 2  # the two rewritten files' new blobs
    assert again.index.head != first.index.head
    assert sum(again.case_counts.values()) > sum(first.case_counts.values())
    fresh = open_repository(path, tmp_path / "other-cache")
    assert fresh.evaluate(DEFAULTS, "all").as_dict() == again.evaluate(DEFAULTS, "all").as_dict()


def test_not_a_git_repository(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="not a git repository"):
        open_repository(tmp_path, tmp_path / "cache")
    with pytest.raises(ValueError, match="not a git repository"):
        open_repository(tmp_path / "missing", tmp_path / "cache")


def test_too_few_usable_commits(tmp_path: Path) -> None:
    path = init(tmp_path / "small")
    commit(path, "Initial", {"a.py": "def alpha():\n    beta()\n", "b.py": "def beta(): pass\n"},
           1_700_000_000)
    commit(path, "Change both", {"a.py": "def alpha():\n    beta()\n# 1\n",
                                 "b.py": "def beta(): pass\n# 1\n"}, 1_700_100_000)
    with pytest.raises(RepositoryError, match=r"found 1 .*need at least 10"):
        open_repository(path, tmp_path / "cache")


def test_git_log_replay_matches_head_tree(fixture_repo: Path) -> None:
    from ranker.gitio import first_parent_log, tree_files
    from ranker.history import scan

    log = first_parent_log(fixture_repo, 1000)
    _, final = scan(log, {}, 0)
    assert final == tree_files(fixture_repo, "HEAD")
    assert subprocess.run(["git", "-C", str(fixture_repo), "status", "--porcelain"],
                          capture_output=True, text=True, check=True).stdout == ""
    assert git(fixture_repo, "rev-list", "--count", "HEAD").strip() == "51"
