"""The console script, as a user runs it: subprocesses, real Redis, real workers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from celery import Celery

from schemas import tasks
from schemas.failures import FailureBatch, RankingFailure
from state import deadletters, ledger, store
from tests.factories import failure
from tests.services import ROOT, Worker, broker_url, wait_until, worker_env

CLI = [sys.executable, "-m", "ops.cli"]


def _run(args: list[str], env: dict[str, str], cwd: Path, stdin: str = "",
         timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout, check=False)


def _embedded_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RIPMAP_") and k not in ("REDIS_URL", "ANTHROPIC_API_KEY")}
    return {**env, "PYTHONPATH": str(ROOT), "RIPMAP_DATA_DIR": str(tmp_path / "data"),
            "RIPMAP_EPISODE_CONCURRENCY": "8"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[{\"query\": ", "malformed JSON"),
        (json.dumps([failure(0), failure(1, ndcg=1.7)]), "record 1: ndcg"),
        (json.dumps([failure(0, unknown_field=1)]), "record 0: unknown_field"),
        (json.dumps([failure(0, expected_top=[])]), "record 0: expected_top"),
        (json.dumps([failure(0, ndcg="x")]), "record 0: ndcg"),
        (json.dumps([failure(0, commit_message="m" * 10_000_000)]), "record 0: commit_message"),
        ("[]", "no failures given"),
        ("", "no failures given"),
        (json.dumps(failure(0)) + "\n{oops\n", "line 2: malformed JSON"),
    ],
)
def test_enqueue_rejects_bad_input_and_enqueues_nothing(
    text: str, expected: str, redis_url: str, tmp_path: Path
) -> None:
    broker = redis.Redis.from_url(broker_url(redis_url))
    broker.delete("episodes")
    done = _run(["enqueue", "-"], worker_env(redis_url), tmp_path, stdin=text)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "nothing was enqueued" in done.stderr
    assert broker.llen("episodes") == 0


def test_enqueue_jsonl_from_stdin_against_a_running_service(
    worker: Worker, client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    lines = "\n".join(json.dumps(failure(i)) for i in range(6))
    done = _run(["enqueue", "-"], worker_env(redis_url), tmp_path, stdin=lines)
    assert done.returncode == 0, done.stderr
    assert "2 batches (2 new" in done.stdout


def test_embedded_default_demo_then_distill_then_status_share_state(tmp_path: Path) -> None:
    env = _embedded_env(tmp_path)
    demo = _run(["demo"], env, tmp_path)
    assert demo.returncode == 0, demo.stderr + demo.stdout
    for needle in ("Current parameters", "Scratchpad", "Distilled Operator Wisdom",
                   "episodes: 2 (0 unparsable)", "pagerank_alpha"):
        assert needle in demo.stdout, needle

    out, as_json = tmp_path / "wisdom.md", tmp_path / "wisdom.json"
    distill = _run(["distill", "--output", str(out), "--json", str(as_json)], env, tmp_path)
    assert distill.returncode == 0, distill.stderr
    assert out.read_text().startswith("# Distilled Operator Wisdom")
    assert "Version 2, from 2 episodes" in out.read_text()
    assert json.loads(as_json.read_text())["version"] == 2

    status = _run(["status", "--json"], env, tmp_path)
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["scratchpad"]["episodes"] == 2 and data["scratchpad"]["wisdom_version"] == 2


def test_optimize_writes_parameters_and_scratchpad(tmp_path: Path) -> None:
    failures = tmp_path / "failures.json"
    failures.write_text(json.dumps([failure(i) for i in range(4)]))
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"pagerank_alpha": 0.8}))
    output, pad = tmp_path / "new_params.json", tmp_path / "pad.md"
    done = _run(["optimize", "--failures", str(failures), "--params", str(params),
                 "--output", str(output), "--scratchpad", str(pad)], _embedded_env(tmp_path),
                tmp_path)
    assert done.returncode == 0, done.stderr
    new = json.loads(output.read_text())
    assert len(new) == 17 and new["pagerank_alpha"] != 0.85
    assert "## Failure Patterns" in pad.read_text() and "Episodes: 1" in pad.read_text()


def test_optimize_rejects_out_of_bounds_params_before_starting(tmp_path: Path) -> None:
    failures = tmp_path / "failures.json"
    failures.write_text(json.dumps([failure(0)]))
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"pagerank_alpha": 1.5}))
    done = _run(["optimize", "--failures", str(failures), "--params", str(params)],
                _embedded_env(tmp_path), tmp_path)
    assert done.returncode == 2 and "pagerank_alpha" in done.stderr
    assert not (tmp_path / "data").exists()


def test_versions_commands_and_report_on_the_embedded_default(tmp_path: Path) -> None:
    env = _embedded_env(tmp_path)
    assert _run(["demo"], env, tmp_path).returncode == 0
    history = _run(["history"], env, tmp_path)
    assert history.returncode == 0 and "v1" in history.stdout and "consensus" in history.stdout
    assert _run(["params", "--best"], env, tmp_path).returncode == 1  # nothing evaluated yet
    report = _run(["report-eval", "--version", "1", "--ndcg", "0.42", "--cases", "30"], env,
                  tmp_path)
    assert report.returncode == 0 and "best is v1" in report.stdout, report.stderr
    out = tmp_path / "params.json"
    assert _run(["params", "--best", "--output", str(out)], env, tmp_path).returncode == 0
    best = json.loads(out.read_text())
    current = json.loads(_run(["params"], env, tmp_path).stdout)
    assert best == current and len(best) == 17
    bad = _run(["report-eval", "--version", "1", "--ndcg", "1.5", "--cases", "3"], env, tmp_path)
    assert bad.returncode == 2 and "mean_ndcg" in bad.stderr
    html = tmp_path / "report.html"
    assert _run(["report", "--output", str(html)], env, tmp_path).returncode == 0
    assert "NDCG per parameter version" in html.read_text()


def test_dlq_commands_show_retry_and_purge(worker: Worker, client: redis.Redis, redis_url: str,
                                           tmp_path: Path) -> None:
    env = worker_env(redis_url)
    Celery(broker=broker_url(redis_url)).send_task(
        tasks.REASON_EPISODE, args=[{"failures": [failure(0, ndcg=2)]}],
        queue=tasks.EPISODE_QUEUE)
    wait_until(lambda: deadletters.count(client) == 1, 30, "dead letter")
    listed = _run(["dlq", "list"], env, tmp_path)
    assert listed.returncode == 0 and "invalid batch" in listed.stdout
    letter = deadletters.list_all(client)[0]
    shown = _run(["dlq", "show", letter.id], env, tmp_path)
    assert shown.returncode == 0 and json.loads(shown.stdout)["task"] == tasks.REASON_EPISODE
    purged = _run(["dlq", "purge"], env, tmp_path)
    assert purged.returncode == 0 and "purged 1" in purged.stdout
    assert deadletters.count(client) == 0


def test_dlq_retry_sends_a_batch_again_and_it_is_merged(
    worker: Worker, client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    batch = FailureBatch(failures=[RankingFailure.model_validate(failure(7))])
    deadletters.add(client, tasks.REASON_EPISODE, batch.model_dump(mode="json"),
                    "reasoner gave up: test", letter_id=batch.batch_id)
    env = worker_env(redis_url)
    retried = _run(["dlq", "retry", batch.batch_id], env, tmp_path)
    assert retried.returncode == 0 and "re-enqueued 1" in retried.stdout, retried.stderr
    wait_until(lambda: store.merged_flags(client, [batch.batch_id])[0], 30, "merge")
    assert deadletters.count(client) == 0 and ledger.open_count(client) == 0
    assert _run(["dlq", "retry"], env, tmp_path).returncode == 1  # nothing left to retry
