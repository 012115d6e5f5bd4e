"""The deployment files: compose validates offline, and the Procfile matches it."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ops.embedded import EPISODE_PREFETCH_MULTIPLIER, worker_command

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose not installed (.ci/run installs Debian's package)")
def test_compose_file_validates_offline() -> None:
    env = {**os.environ, "FLOWER_BASIC_AUTH": "ops:secret"}
    done = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
                          capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert "--appendonly yes" in done.stdout and "noeviction" in done.stdout
    assert "--read_only" in done.stdout and "--basic_auth=ops:secret" in done.stdout


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose not installed (.ci/run installs Debian's package)")
def test_compose_refuses_flower_without_basic_auth() -> None:
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"}
    done = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
                          capture_output=True, text=True, env=env, check=False)
    assert done.returncode != 0 and "FLOWER_BASIC_AUTH" in done.stderr


def test_procfile_runs_every_process_with_separate_merge_queue() -> None:
    entries = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert set(entries) == {"worker", "merger", "evaluator", "beat", "flower", "api"}
    assert "-Q episodes" in entries["worker"] and "-P threads" in entries["worker"]
    assert f"--prefetch-multiplier {EPISODE_PREFETCH_MULTIPLIER}" in entries["worker"]
    assert "--prefetch-multiplier" not in entries["merger"]
    assert "-Q merge" in entries["merger"]
    assert "--read_only" in entries["flower"] and "--basic_auth" in entries["flower"]


def test_episode_workers_reserve_their_next_message_everywhere() -> None:
    # compose, like the Procfile and the embedded default, runs episode workers with the
    # prefetch the benchmarks measured; merge workers keep the configured prefetch of 1
    compose = (ROOT / "docker-compose.yml").read_text()
    worker = compose.split("\n  worker:\n", 1)[1].split("\n  merger:\n", 1)[0]
    assert "-Q episodes" in worker
    assert f"--prefetch-multiplier {EPISODE_PREFETCH_MULTIPLIER}" in " ".join(worker.split())
    episodes = worker_command("episodes", "threads", 64, "episodes", None,
                              EPISODE_PREFETCH_MULTIPLIER)
    assert episodes[episodes.index("--prefetch-multiplier") + 1] == "2"
    merge = worker_command("merge", "threads", 4, "merge", None)
    assert merge[merge.index("--prefetch-multiplier") + 1] == "1"
