"""Fuzzing every public entry point with hypothesis: the producer API, CLI input (the reader
and the ``enqueue`` command) and task payloads sent to a real worker.

The contract: never a crash, never a partial enqueue. Bad input gets a clear error naming
the record and field (and nothing is enqueued), or, for a message a foreign client put on
the queue, a dead letter with the reason; everything valid goes through whole.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import ValidationError

from ops import cli, reading
from producer.api import InvalidInput, Producer
from schemas import tasks
from schemas.episode import ReasoningEpisode
from schemas.failures import RankingFailure, content_id
from schemas.settings import Settings
from schemas.versions import Evaluation
from state import deadletters, keys, store, versions
from tests import reliability
from tests.factories import episode, failure
from tests.services import Worker, broker_url, start_private_redis, wait_until
from worker import episodes

pytestmark = pytest.mark.chaos  # part of the fault suite: `make chaos` runs 4x the examples

EXAMPLES = max(20, round(120 * reliability.scale()))
FUZZ_SETTINGS = hsettings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])
FIELDS = [*RankingFailure.model_fields, "unknown_field"]

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)
# values chosen to sit on or just past a limit of some field
edge_values = st.sampled_from([
    "", " ", "x" * 1_025, "x" * 2_001, "q" * 20_001, -1, 0, 1, 1.0000001, -0.0, 10**12,
    True, [], [""], ["a"] * 101, {}, {"name": "r", "file_count": -1}, "nan", "1e999",
])


@st.composite
def records(draw: st.DrawFn, valid_only: bool = False) -> Any:
    """A failure record: valid, mutated in a few fields, or any JSON value at all."""
    kind = "valid" if valid_only else draw(st.sampled_from(["valid", "mutated", "mutated",
                                                             "json"]))
    if kind == "json":
        return draw(json_values)
    record = failure(draw(st.integers(0, 10**9)),
                     ndcg=draw(st.floats(0.0, 1.0)),
                     commit_message=draw(st.text(max_size=30)))
    if kind == "mutated":
        for _ in range(draw(st.integers(1, 3))):
            name = draw(st.sampled_from(FIELDS))
            if draw(st.booleans()) and name in record:
                del record[name]
            else:
                record[name] = draw(edge_values | json_values)
    return record


def valid(record: Any) -> bool:
    try:
        RankingFailure.model_validate(record)
    except ValidationError:
        return False
    return True


PROBLEM = re.compile(r"^record (\d+): \S.*")


@pytest.fixture(scope="module")
def lone_redis() -> Iterator[str]:
    """A Redis with no worker: what is enqueued stays in the queue, to be counted."""
    proc, url, _ = start_private_redis()
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def lone(lone_redis: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, Any]]:
    """Settings on the lone Redis (in the environment too, for the CLI), and a probe
    returning (batches marked as enqueued, messages queued)."""
    monkeypatch.setenv("RIPMAP_REDIS_URL", lone_redis)
    monkeypatch.setenv("RIPMAP_BROKER_URL", broker_url(lone_redis))
    settings = Settings()
    state, broker = store.connect(lone_redis), redis.Redis.from_url(broker_url(lone_redis))

    def probe() -> tuple[int, int]:
        return len(state.keys(keys.batch_seen("*"))), int(broker.llen(tasks.EPISODE_QUEUE))

    yield settings, probe
    state.close()
    broker.close()


def test_producer_enqueue_is_all_or_nothing(lone: tuple[Settings, Any]) -> None:
    settings, probe = lone
    producer = Producer(settings)
    seen = {"inputs": 0, "refused": 0, "enqueued": 0}

    @FUZZ_SETTINGS
    @given(st.lists(records(), max_size=12) | st.lists(records(valid_only=True), max_size=12))
    def check(batch: list[Any]) -> None:
        seen["inputs"] += 1
        before = probe()
        bad = {i for i, r in enumerate(batch) if not valid(r)}
        try:
            results = producer.enqueue(batch)
        except InvalidInput as exc:
            seen["refused"] += 1
            assert probe() == before  # nothing partial
            named = {int(m[1]) for p in exc.problems if (m := PROBLEM.match(p))}
            assert named == bad or (not batch and "no failures" in exc.problems[0])
            return
        assert not bad and batch
        new = sum(r.new for r in results)
        seen["enqueued"] += new
        after = probe()
        assert after == (before[0] + new, before[1] + new)
        assert len(results) == -(-len(batch) // settings.batch_size)

    check()
    producer.close()
    reliability.record("fuzz_producer_api", inputs=seen["inputs"], crashes=0,
                       partial_enqueues=0, refused=seen["refused"],
                       batches_enqueued=seen["enqueued"])


@st.composite
def cli_texts(draw: st.DrawFn) -> str:
    """What someone may feed the CLI: a JSON list, ``{"failures": [...]}``, one object,
    JSONL with stray lines, or any text at all."""
    items = draw(st.lists(records(), max_size=8))
    form = draw(st.sampled_from(["list", "wrapped", "object", "jsonl", "text", "pretty"]))
    if form == "list":
        return json.dumps(items)
    if form == "wrapped":
        return json.dumps({"failures": items})
    if form == "object":
        return json.dumps(items[0] if items else {})
    if form == "pretty":
        return json.dumps(items, indent=2)
    if form == "jsonl":
        lines = [json.dumps(r) for r in items]
        for _ in range(draw(st.integers(0, 2))):
            lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=30)))
        return "\n".join(lines)
    return draw(st.text(max_size=200))


def test_cli_reader_returns_records_or_a_clear_error() -> None:
    count = 0

    @FUZZ_SETTINGS
    @given(cli_texts())
    def check(text: str) -> None:
        nonlocal count
        count += 1
        try:
            out = reading.read_records("input.jsonl", text)
        except InvalidInput as exc:
            assert exc.problems and all(p.startswith("input.jsonl") for p in exc.problems)
        else:
            assert isinstance(out, list)  # emptiness is the validator's to refuse

    check()
    reliability.record("fuzz_cli_reader", inputs=count, crashes=0)


def test_enqueue_command_enqueues_all_or_nothing(
    lone: tuple[Settings, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, probe = lone
    path = tmp_path / "failures.json"
    count = 0

    @FUZZ_SETTINGS
    @given(cli_texts())
    def check(text: str) -> None:
        nonlocal count
        count += 1
        path.write_text(text)
        before = probe()
        code = cli.main(["enqueue", str(path)])
        captured = capsys.readouterr()
        assert code in (0, 2), captured.err
        if code == 2:
            assert "nothing was enqueued" in captured.err
            assert probe() == before
        else:
            m = re.search(r"\((\d+) new", captured.out)
            assert m, captured.out
            assert probe() == (before[0] + int(m[1]), before[1] + int(m[1]))

    check()
    reliability.record("fuzz_cli_enqueue", inputs=count, crashes=0, partial_enqueues=0)


def test_deeply_nested_cli_input_is_an_invalid_input_error() -> None:
    with pytest.raises(InvalidInput):
        reading.read_records("deep.json", "[" * 100_000 + "]" * 100_000)


def test_non_utf8_file_is_an_invalid_input_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(json.dumps([failure(1, query="café")], ensure_ascii=False).encode("latin-1"))
    with pytest.raises(InvalidInput):
        reading.read_records(str(path))


# ------------------------------------------------------------ task payloads, to a real worker

batch_payloads = st.lists(records(), min_size=0, max_size=7).map(lambda fs: {"failures": fs}) | (
    json_values)


@st.composite
def episode_payloads(draw: st.DrawFn) -> Any:
    record = episode(draw(st.integers(0, 10**9))).model_dump(mode="json")
    record["episode_id"] = record["batch_id"] = f"fz{draw(st.integers(0, 10**12))}"
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from([*ReasoningEpisode.model_fields, "extra"]))
        record[name] = draw(edge_values | json_values)
    return record


evaluation_payloads = st.fixed_dictionaries(
    {"version": st.integers(-1, 5), "mean_ndcg": st.floats(-0.5, 1.5, allow_nan=False),
     "cases": st.integers(0, 50)},
    optional={"evaluation_id": st.text(max_size=70), "per_case": st.lists(st.floats(0, 1),
                                                                          max_size=5),
              "bogus": json_values})
kwargs_junk = st.dictionaries(st.sampled_from(["force", "request_id", "bogus"]), json_values,
                              max_size=2)
messages = st.one_of(
    st.tuples(st.just(tasks.REASON_EPISODE), batch_payloads.map(lambda p: [p]), st.just({})),
    st.tuples(st.just(tasks.MERGE_INSIGHTS), (episode_payloads() | json_values).map(
        lambda p: [p]), st.just({})),
    st.tuples(st.just(tasks.REPORT_EVALUATION), evaluation_payloads.map(lambda p: [p]),
              st.just({})),
    st.tuples(st.sampled_from([tasks.DISTILL, tasks.STEP_PARAMS]), st.just([]), kwargs_junk),
    # a foreign client getting the signature wrong
    st.tuples(st.sampled_from([tasks.REASON_EPISODE, tasks.MERGE_INSIGHTS]),
              st.lists(json_values, min_size=2, max_size=3), st.just({})),
)


SIGNATURES = {tasks.DISTILL: {"force", "request_id"}, tasks.STEP_PARAMS: {"force"}}


def expected(task: str, args: list[Any], kwargs: dict[str, Any], settings: Settings
             ) -> tuple[str, str]:
    """``("effect", key)`` when the message is valid, else ``("dead", letter id)``."""
    if task in SIGNATURES:
        if kwargs.keys() <= SIGNATURES[task]:
            return "effect", content_id([task, {"args": args, "kwargs": kwargs}])
        return "dead", content_id([task, {"args": args, "kwargs": kwargs}])
    if len(args) != 1 or kwargs:
        return "dead", content_id([task, {"args": args, "kwargs": kwargs}])
    (payload,) = args
    try:
        if task == tasks.REASON_EPISODE:
            return "effect", episodes.parse_batch(payload, settings).batch_id
        if task == tasks.MERGE_INSIGHTS:
            return "effect", ReasoningEpisode.model_validate(payload).episode_id
        evaluation = Evaluation.model_validate(payload)
        return "effect", evaluation.evaluation_id or content_id(evaluation.model_dump(mode="json"))
    except ValidationError:
        return "dead", content_id([task, payload])


def test_task_payloads_to_a_real_worker_end_as_effects_or_dead_letters(
    worker: Worker, client: redis.Redis, settings: Settings
) -> None:
    sender = Celery(broker=settings.broker)
    outcomes = {"effect": 0, "dead": 0}

    def done(task_id: str) -> bool:
        return f"[{task_id}] succeeded" in worker.log.read_text(errors="replace")

    def outcome(task: str, want: str, key: str, task_id: str) -> bool:
        """Whether the message's outcome is visible yet (polled: a message is briefly in
        neither the queue nor the unacknowledged set, so an idle broker proves nothing)."""
        if want == "dead":
            return deadletters.get(client, key) is not None
        if task == tasks.REASON_EPISODE:
            return bool(store.merged_flags(client, [key])[0] or deadletters.get(client, key))
        if task == tasks.MERGE_INSIGHTS:
            return bool(store.merged_flags(client, [key])[0])
        if task == tasks.REPORT_EVALUATION:
            return versions.evaluation_recorded(client, key)
        return done(task_id)

    @FUZZ_SETTINGS
    @given(messages)
    def check(message: tuple[str, list[Any], dict[str, Any]]) -> None:
        task, args, kwargs = message
        want, key = expected(task, args, kwargs, settings)
        sent = sender.send_task(task, args=args, kwargs=kwargs, queue=tasks.TASK_QUEUES[task])
        wait_until(lambda: outcome(task, want, key, sent.id), 15, f"{task} {want}: {message}")
        assert worker.proc.poll() is None
        outcomes[want] += 1
        if want == "dead":
            letter = deadletters.get(client, key)
            assert letter is not None and letter.task == task, (task, args, kwargs)
            # the field's path, then the problem (a path may hold any key a client sent)
            assert re.search(r"(invalid \w+: .+: |failed: \w+)", letter.reason, re.S), letter
        elif task in SIGNATURES:
            assert deadletters.get(client, key) is None

    check()
    sender.close()
    # the worker still works: a valid batch sent after all that is merged
    [sent] = Producer(settings).enqueue([failure(10**10)])
    wait_until(lambda: store.merged_flags(client, [sent.batch_id])[0], 30, "a valid batch")
    reliability.record("fuzz_task_payloads", inputs=sum(outcomes.values()), crashes=0,
                       dead_lettered=outcomes["dead"], applied=outcomes["effect"])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
