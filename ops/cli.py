"""``ripmap-optimizer``: the operator's command line."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from pydantic import ValidationError
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ops import dashboard, embedded, loop, monitor, reading, recommend
from producer.api import InvalidInput, Producer, validate_failures
from producer.push import Pusher
from schemas import tasks
from schemas.deadletter import DeadLetter
from schemas.errors import describe
from schemas.failures import FailureBatch, RankingFailure
from schemas.params import PARAM_SPECS, ParameterPoint
from schemas.repos import RepoEvaluation
from schemas.scratchpad import ScratchpadSummary
from schemas.settings import Settings, get_settings
from schemas.versions import Evaluation
from schemas.wisdom import Wisdom
from state import deadletters, evaluations, store, versions

out = Console()
err = Console(stderr=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = _parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the embedded service's children are stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return int(args.func(args, get_settings()))
    except InvalidInput as exc:
        err.print("[bold red]invalid input[/] (nothing was enqueued):")
        for problem in exc.problems[:50]:
            err.print(f"  - {problem}", markup=False, highlight=False)
        return 2
    except (RuntimeError, TimeoutError, redis.ConnectionError) as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted: the embedded service was stopped; queued work is kept")
        return 130


def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    """Validate and enqueue failures; on the embedded default, also run them."""
    records = reading.read_records(args.file)
    validate_failures(records)
    with embedded.service(settings) as live:
        ids = _submit(live, records)
        if not settings.redis_url:
            _wait(live, ids, args.timeout)
    return 0


def cmd_optimize(args: argparse.Namespace, settings: Settings) -> int:
    """Enqueue failures, wait for their episodes, write new parameters and the scratchpad."""
    records = reading.read_records(str(args.failures))
    validate_failures(records)
    start_params = _load_params(args.params) if args.params else None
    with embedded.service(settings) as live:
        client = store.connect(live.state_url)
        if start_params is not None:
            versions.set_manual(client, start_params, f"optimize --params {args.params}", live)
        _wait(live, _submit(live, records), args.timeout)
        _step_now(live, client, args.timeout)
        summary = store.summary(client)
    _write_outputs(summary, args.output, args.scratchpad)
    _print_summary(summary)
    return 0


def cmd_distill(args: argparse.Namespace, settings: Settings) -> int:
    """Distill the shared scratchpad now and write the wisdom."""
    with embedded.service(settings) as live:
        client = store.connect(live.state_url)
        wisdom = _distill_now(live, client, args.timeout)
    if wisdom is None:
        return 1
    if args.json:
        Path(args.json).write_text(wisdom.model_dump_json(indent=2) + "\n")
        out.print(f"wisdom (JSON) written to {args.json}")
    if args.output:
        Path(args.output).write_text(wisdom.to_markdown())
        out.print(f"wisdom written to {args.output}")
    elif not args.json:
        out.print(Markdown(wisdom.to_markdown()))
    return 0


DEMO_STALL_SECONDS = 60.0  # the demo stops when no evaluation lands for this long


@loop.guard
def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """The closed loop on this repository's own history (a few evaluations), then one
    distillation; the bundled sample failures where there is no usable git history."""
    if args.evaluations < 1:
        raise loop.BadInput("--evaluations must be at least 1")
    path = args.repo or own_history()
    if path is None:
        err.print("no git history here: running the bundled sample failures instead")
        return _demo_samples(args, settings)
    try:
        repo = loop.open_repo(path, settings, args.window)
    except loop.BadInput as exc:
        if args.repo:  # asked for by name: say so rather than demo something else
            raise
        err.print(f"{exc}: running the bundled sample failures instead", highlight=False)
        return _demo_samples(args, settings)
    with embedded.service(settings) as live:
        client = store.connect(live.state_url)
        name = loop.ensure_registered(client, path, loop.default_name(repo), args.window,
                                      repo.index.head)
        outcome = loop.run_loop(client, live, name, args.evaluations,
                                min(args.timeout, DEMO_STALL_SECONDS))
        wisdom = _distill_now(live, client, args.timeout)
    loop.write_best(outcome, args.output)
    if outcome.rows and outcome.best is not None:
        _print_params(outcome.best.params, f"Best parameters (v{outcome.best.version})")
    return _print_wisdom(wisdom)


def own_history() -> Path | None:
    """The git work tree the command runs in, if any."""
    found = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True,
                           text=True, check=False)
    return Path(found.stdout.strip()) if found.returncode == 0 else None


def _demo_samples(args: argparse.Namespace, settings: Settings) -> int:
    """The bundled sample failures, end to end, one distillation."""
    records = reading.sample_failures()
    with embedded.service(settings) as live:
        client = store.connect(live.state_url)
        _wait(live, _submit(live, records), args.timeout)
        _step_now(live, client, args.timeout)
        wisdom = _distill_now(live, client, args.timeout)
        summary = store.summary(client)
    _print_summary(summary)
    return _print_wisdom(wisdom)


def _print_wisdom(wisdom: Wisdom | None) -> int:
    if wisdom:
        out.rule("Distilled wisdom")
        out.print(Markdown(wisdom.to_markdown()))
    return 0 if wisdom else 1


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Queue depths, episodes merged, dead letters, parameters, last distillation."""
    with embedded.service(settings, workers=False) as live:
        client = store.connect(live.state_url)
        summary = store.summary(client)
        ops = monitor.operations(client, live)
        buffered, unconfirmed = store.push_backlog(client)
        wisdom = store.latest_wisdom(client)
        current, best = versions.current_number(client), versions.best_number(client)
        loop_state = _loop_state(client, live)
    if args.json:
        out.print_json(json.dumps({
            **ops.model_dump(mode="json"), **loop_state,
            "params_version": current, "best_version": best,
            "push_buffered": buffered, "push_unconfirmed": unconfirmed,
            "last_distilled_at": wisdom.created_at if wisdom else None,
            "scratchpad": summary.model_dump(mode="json")}))
        return 0
    table = Table(title="ripmap-optimizer status", show_header=False)
    for queue, depth in ops.queues.items():
        table.add_row(f"queue {queue}", str(depth))
    table.add_row("pushed, waiting for a batch", str(sum(buffered.values())))
    table.add_row("batches sent, not yet merged", str(ops.open_batches))
    table.add_row("episodes waiting to be merged", str(ops.awaiting_merge))
    if ops.resent_by_ledger:
        table.add_row("batches the broker lost, sent again", str(ops.resent_by_ledger))
    table.add_row("episodes merged", f"{summary.episodes} ({summary.unparsable} unparsable), "
                  f"{ops.episodes_per_minute:.1f}/min over the last 10 min")
    table.add_row("dead letters", str(ops.dead_letters))
    table.add_row("parameters", f"v{current}, best: {'v' + str(best) if best is not None else '-'}")
    table.add_row("trust region", _trust_text(loop_state))
    table.add_row("evaluations", f"{loop_state['evaluations_recorded']} recorded, "
                  f"{loop_state['evaluations_due']} due, on "
                  f"{len(loop_state['repositories'])} registered repositories")
    table.add_row("last distillation", _distilled(wisdom, summary.pending_distill))
    table.add_row("tokens", ", ".join(f"{k} {v:,}" for k, v in ops.tokens.items()) or "none")
    limit = f" of {ops.budget_limit:,}" if ops.budget_limit else " (no daily cap)"
    table.add_row("budget today", f"{ops.budget_used_today:,}{limit}")
    if ops.budget_paused_reason:
        table.add_row("[bold red]LLM calls paused[/]", ops.budget_paused_reason)
    out.print(table)
    _print_params(summary.params)
    return 0


def _loop_state(client: redis.Redis, settings: Settings) -> dict[str, Any]:
    """The closed loop's figures for ``status``: trust region and evaluations."""
    return {
        "unevaluated_steps": versions.unevaluated_steps(client),
        "max_unevaluated_steps": settings.max_unevaluated_steps,
        "steps_wait_for_evaluation": versions.held_for_evaluation(client, settings),
        "evaluations_recorded": len(evaluations.results(client)),
        "evaluations_due": evaluations.due_count(client),
        "repositories": [r.name for r in evaluations.repos(client)],
    }


def _trust_text(state: dict[str, Any]) -> str:
    text = (f"{state['unevaluated_steps']} of {state['max_unevaluated_steps']} steps taken "
            "since the last evaluated version")
    if state["steps_wait_for_evaluation"]:
        text += "; [bold yellow]votes wait for an evaluation[/]"
    return text


def _distilled(wisdom: Wisdom | None, pending: int) -> str:
    if wisdom is None:
        return "never"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wisdom.created_at))
    return f"v{wisdom.version} at {when}; {pending} episodes merged since"


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    """List, show, retry or purge dead letters."""
    with embedded.service(settings, workers=args.action == "retry") as live:
        client = store.connect(live.state_url)
        if args.action == "list":
            _print_dead(deadletters.list_all(client, args.limit))
        elif args.action == "show":
            letter = deadletters.get(client, args.id or "")
            if letter is None:
                err.print(f"no dead letter {args.id!r}")
                return 1
            out.print_json(letter.model_dump_json())
        elif args.action == "purge":
            out.print(f"purged {deadletters.purge(client)} dead letters")
        else:
            return _retry_dead(live, client, args)
    return 0


def _retry_dead(live: Settings, client: redis.Redis, args: argparse.Namespace) -> int:
    letters = deadletters.list_all(client, 10_000) if args.id is None else [
        letter for letter in [deadletters.get(client, args.id)] if letter]
    producer = Producer(live)
    for letter in letters:
        batch = _valid_batch(letter) if letter.task == tasks.REASON_EPISODE else None
        if batch is not None:  # sent as the producer sends it: open in the ledger again
            producer.enqueue_batches([batch], force=True)
        else:
            producer.send(letter.task, [letter.payload], None)
        deadletters.remove(client, letter.id)
    out.print(f"re-enqueued {len(letters)} dead letters")
    return 0 if letters else 1


def _valid_batch(letter: DeadLetter) -> FailureBatch | None:
    try:
        return FailureBatch.model_validate(letter.payload)
    except ValidationError:
        return None


def cmd_params(args: argparse.Namespace, settings: Settings) -> int:
    """Write a version's parameters as ripmap's flat params.json (current by default)."""
    with embedded.service(settings, workers=False) as live:
        client = store.connect(live.state_url)
        number = versions.best_number(client) if args.best else args.version
        if args.best and number is None:
            err.print("no best version yet: report evaluations first (report-eval)")
            return 1
        record = versions.get(client, versions.current_number(client) if number is None
                              else number)
    if record is None:
        err.print(f"no parameter version {number}")
        return 1
    text = json.dumps(record.params.as_floats(), indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
        out.print(f"version {record.version} written to {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    """Parameter versions with NDCG, what changed, and why."""
    with embedded.service(settings, workers=False) as live:
        client = store.connect(live.state_url)
        rows = versions.history(client, args.limit)
        best = versions.best_number(client)
        held = versions.held_for_evaluation(client, live)
        held_out = _held_out_by_version(evaluations.results(client))
    table = Table(title="Parameter versions (newest first)")
    for col in ("version", "reason", "from", "NDCG (cases)", "held-out", "changes",
                "provenance"):
        table.add_column(col)
    for record, sc in rows:
        ndcg = f"{sc.mean_ndcg:.3f} ({sc.cases})" if sc.mean_ndcg is not None else "-"
        mark = " best" if record.version == best else ""
        changes = ", ".join(f"{p} x{f:.2f}" for p, f in record.factors.items()) or record.note
        table.add_row(f"v{record.version}{mark}", record.reason, str(record.parent or "-"),
                      ndcg, held_out.get(record.version, "-"), changes[:80],
                      f"{len(record.provenance)} episodes")
    out.print(table)
    if held:
        out.print(f"the next consensus step waits for an evaluation: {live.max_unevaluated_steps}"
                  " steps were taken since the last evaluated version (votes are kept)")
    return 0


def _held_out_by_version(results: list[RepoEvaluation]) -> dict[int, str]:
    """Held-out NDCG per version and repository, for reporting only."""
    by: dict[int, list[str]] = {}
    for r in results:
        by.setdefault(r.version, []).append(f"{r.repo} {r.heldout.ndcg:.3f}")
    return {v: ", ".join(items) for v, items in by.items()}


def cmd_report_eval(args: argparse.Namespace, settings: Settings) -> int:
    """Report a ranking service's NDCG for a version (moves best, may roll back)."""
    per_case = json.loads(Path(args.per_case).read_text()) if args.per_case else []
    try:
        evaluation = Evaluation(version=args.version, mean_ndcg=args.ndcg, cases=args.cases,
                                per_case=per_case)
    except ValidationError as exc:
        raise InvalidInput(describe(exc)) from None
    with embedded.service(settings) as live:
        producer = Producer(live)
        eid = producer.report_evaluation(evaluation)
        client = store.connect(live.state_url)
        _poll(lambda: int(versions.evaluation_recorded(client, eid)), 1, args.timeout,
              lambda _: None)
        best = versions.best_number(client)
    out.print(f"recorded NDCG {evaluation.mean_ndcg:.3f} over {evaluation.cases} cases for "
              f"v{evaluation.version}; best is {'v' + str(best) if best is not None else 'unset'}")
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    """Write the dashboard as one self-contained HTML file (opens offline)."""
    with embedded.service(settings, workers=False) as live:
        data = dashboard.collect(store.connect(live.state_url), live)
    Path(args.output).write_text(dashboard.render(data, live=False))
    out.print(f"report written to {args.output} ({len(data.versions)} versions, "
              f"{data.operations.episodes} episodes)")
    return 0


def _step_now(settings: Settings, client: redis.Redis, timeout: float) -> None:
    """Take the consensus step on whatever votes are pending, without waiting for a quorum."""
    if not versions.pending_votes(client):
        return
    if versions.held_for_evaluation(client, settings):
        err.print(f"the votes wait for an evaluation: {settings.max_unevaluated_steps} steps "
                  "were taken since the last evaluated version (report-eval, or repo add so "
                  "that every version is evaluated)")
        return
    Producer(settings).step()
    _poll(lambda: int(versions.pending_votes(client) == 0), 1, timeout, lambda _: None)


def _submit(settings: Settings, records: list[Any]) -> list[str]:
    producer = Producer(settings)
    try:
        results = producer.enqueue(records)
    finally:
        producer.close()
    new = sum(r.new for r in results)
    out.print(f"{len(results)} batches ({new} new, {len(results) - new} submitted before)")
    return [r.batch_id for r in results]


def _wait(settings: Settings, batch_ids: list[str], timeout: float) -> None:
    """Show progress until every batch is merged or dead-lettered."""
    client = store.connect(settings.state_url)
    columns = (TextColumn("episodes"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("episodes", total=len(batch_ids))
        done = _poll(lambda: _finished(client, batch_ids), len(batch_ids), timeout,
                     lambda n: progress.update(task, completed=n))
    dead = sum(deadletters.exists_flags(client, batch_ids))
    out.print(f"{done - dead} episodes merged, {dead} dead-lettered")


def _finished(client: redis.Redis, batch_ids: list[str]) -> int:
    merged = store.merged_flags(client, batch_ids)
    dead = deadletters.exists_flags(client, batch_ids)
    return sum(m or d for m, d in zip(merged, dead, strict=True))


def _poll(check: Callable[[], int], goal: int, timeout: float, show: Callable[[int], Any]) -> int:
    deadline = time.monotonic() + timeout
    while True:
        embedded.check_workers()
        done = check()
        show(done)
        if done >= goal:
            return done
        if time.monotonic() > deadline:
            raise TimeoutError(f"{goal - done} of {goal} batches still running after {timeout}s")
        time.sleep(0.1)


def _distill_now(settings: Settings, client: redis.Redis, timeout: float) -> Wisdom | None:
    if store.summary(client, 1).episodes == 0:
        err.print("nothing to distill: no episode has been merged yet")
        return None
    request_id = Producer(settings).distill()
    result: dict[str, Any] = {}

    def check() -> int:
        result.update(store.distill_result(client, request_id) or {})
        return 1 if result else 0

    with err.status("distilling"):
        _poll(check, 1, timeout, lambda _: None)
    wisdom = store.latest_wisdom(client)
    if wisdom is None:
        err.print(f"distillation did not produce wisdom: {result.get('status')}")
        return None
    return wisdom


def _load_params(path: Path) -> ParameterPoint:
    try:
        return ParameterPoint.model_validate_json(Path(path).read_text())
    except ValidationError as exc:
        raise InvalidInput([f"{path}: {line}" for line in describe(exc)]) from None
    except OSError as exc:
        raise InvalidInput([f"{path}: {exc.strerror}"]) from None


def _write_outputs(summary: ScratchpadSummary, output: Path | None, pad: Path | None) -> None:
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(summary.params.as_floats(), indent=2) + "\n")
        out.print(f"parameters written to {output}")
    if pad:
        pad.parent.mkdir(parents=True, exist_ok=True)
        pad.write_text(summary.to_markdown())
        out.print(f"scratchpad written to {pad}")


def _print_summary(summary: ScratchpadSummary) -> None:
    _print_params(summary.params)
    out.rule("Scratchpad")
    out.print(f"episodes: {summary.episodes} ({summary.unparsable} unparsable), "
              f"proposals: {summary.proposals}, mean confidence: {summary.mean_confidence:.2f}")
    for title, items in (("Failure patterns", summary.signatures),
                         ("Parameter interactions", summary.interactions),
                         ("Structural insights", summary.structural)):
        if items:
            out.print(f"[bold]{title}[/]")
            for item in items[:5]:
                out.print(f"  {item.count:>4}×  {item.text}", markup=False, highlight=False)


def _print_params(params: ParameterPoint, title: str = "Current parameters") -> None:
    table = Table(title=title)
    for col in ("parameter", "value", "default", "bounds"):
        table.add_column(col)
    for name, value in params.as_floats().items():
        spec = PARAM_SPECS[name]
        mark = "" if value == spec.default else " *"
        table.add_row(name, f"{value:.6g}{mark}", f"{spec.default:g}", spec.bounds_text())
    out.print(table)


def _print_dead(letters: list[Any]) -> None:
    table = Table(title=f"{len(letters)} dead letters")
    for col in ("id", "task", "attempts", "reason"):
        table.add_column(col)
    for d in letters:
        table.add_row(d.id, d.task, str(d.attempts), d.reason[:120])
    out.print(table)


def cmd_push(args: argparse.Namespace, settings: Settings) -> int:
    """Push failures from stdin (JSONL) as they arrive.

    Each line is validated and pushed as soon as it arrives (lines that arrive together
    are pushed in one transaction). A bad line is reported with its number and skipped:
    the lines before and after it are pushed. Exit status 2 when any line was bad. At the
    end, partial batches stay buffered for the flusher, or are enqueued at once with
    --flush (always on the embedded default, whose beat stops with the command).
    """
    with embedded.service(settings) as live:
        pusher = Pusher(live)
        try:
            tally = _push_lines(pusher, sys.stdin.buffer, live.api_max_body_bytes)
            if args.flush or not settings.redis_url:
                tally.batches += pusher.flush(everything=True).batches
        finally:
            pusher.close()
        out.print(f"{tally.pushed} failures pushed, {len(tally.batches)} batches enqueued, "
                  f"{tally.bad} bad lines skipped")
        if not settings.redis_url and tally.batches:
            _wait(live, tally.batches, args.timeout)
    return 2 if tally.bad else 0


class _PushTally:
    """What ``push`` did so far: failures pushed, batches they filled, lines skipped."""

    def __init__(self) -> None:
        self.pushed = 0
        self.bad = 0
        self.batches: list[str] = []


PUSH_READ_BYTES = 65_536  # what one read takes at most from anything but a pipe
PUSH_PIPE_BYTES = 1 << 20  # the pipe size asked for on stdin (Linux's default ceiling)


def _push_lines(pusher: Pusher, stream: Any, max_line: int) -> _PushTally:
    """Read what has arrived (``stream.read1``: no waiting for a full buffer), push its lines.

    A line longer than ``max_line`` is reported once and its bytes dropped as they arrive.
    """
    tally, lineno, tail, skipping = _PushTally(), 0, b"", False
    size = _widen_pipe(stream)
    while chunk := stream.read1(size):
        *lines, tail = (tail + chunk).split(b"\n")
        if skipping and lines:  # the rest of an over-long line
            lines, skipping = lines[1:], False
        if len(tail) > max_line and not skipping:
            lines, tail, skipping = [*lines, tail], b"", True
        elif skipping:
            tail = b""
        lineno = _push_chunk(pusher, lines, lineno, max_line, tally)
    _push_chunk(pusher, [tail], lineno, max_line, tally)
    return tally


def _widen_pipe(stream: Any) -> int:
    """Grow the pipe ``stream`` reads from, if it is one; returns the size to read at once.

    A fast writer then runs up to a mebibyte ahead while a chunk is pushed, and the next
    read takes all of it: fewer, larger transactions (one per read) for the same lines.
    """
    try:
        fd = stream.fileno()
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            return max(PUSH_READ_BYTES, fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PUSH_PIPE_BYTES))
    except (AttributeError, OSError, ValueError):  # no descriptor, not Linux, over a limit
        pass
    return PUSH_READ_BYTES


def _push_chunk(pusher: Pusher, lines: list[bytes], lineno: int, max_line: int,
                tally: _PushTally) -> int:
    """Validate each line, report the bad ones, push the good ones together."""
    good = []
    for raw in lines:
        lineno += 1
        if not raw.strip():
            continue
        problems = _line_problems(raw, max_line)
        if isinstance(problems, list):
            tally.bad += 1
            for problem in problems:
                err.print(f"line {lineno}: {problem}", markup=False, highlight=False)
        else:
            good.append(problems)
    if good:
        try:
            receipts = pusher.push_valid(good)
        except Exception:
            err.print(f"stopped at line {lineno}: the {tally.pushed} failures pushed before "
                      "this chunk are kept", markup=False, highlight=False)
            raise
        tally.pushed += len(receipts)
        tally.batches += list(dict.fromkeys(r.batch_id for r in receipts if r.batch_id))
    return lineno


def _line_problems(raw: bytes, max_line: int) -> RankingFailure | list[str]:
    """The validated failure on the line, or the list of what is wrong with it."""
    if len(raw) > max_line:
        return [f"line over {max_line} bytes"]
    try:
        return RankingFailure.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors and errors[0]["type"] == "json_invalid":
            return [f"malformed JSON: {errors[0]['msg'].removeprefix('Invalid JSON: ')}"]
        return describe(exc)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run the HTTP API until interrupted; on the embedded default, with its workers."""
    # imported on demand: FastAPI and uvicorn are only needed by this command
    import uvicorn

    from ops.http import create_app

    # uvicorn re-raises SIGTERM after its graceful shutdown; main's handler turns it into
    # an exit through the `with`, so the embedded service is stopped too
    with embedded.service(settings) as live:
        out.print(f"serving on http://{args.host}:{args.port} (OpenAPI at /docs)")
        uvicorn.run(create_app(live), host=args.host, port=args.port,
                    log_level=args.log_level, access_log=args.access_log)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ripmap-optimizer",
                                description="Reasoning-based tuning of ripmap's ranking")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("enqueue", help="validate and enqueue failures (JSON list or JSONL)")
    e.add_argument("file", help="path, or - for stdin")
    e.set_defaults(func=cmd_enqueue)
    o = sub.add_parser("optimize", help="run episodes on failures and write new parameters")
    o.add_argument("--failures", type=Path, required=True)
    o.add_argument("--params", type=Path, help="start from these parameters (replaces current)")
    o.add_argument("--scratchpad", type=Path, help="write the scratchpad as markdown here")
    o.add_argument("--output", type=Path, help="write the new parameters (JSON) here")
    o.set_defaults(func=cmd_optimize)
    d = sub.add_parser("distill", help="distill the shared scratchpad into wisdom")
    d.add_argument("--output", type=Path, help="write the wisdom markdown here")
    d.add_argument("--json", type=Path, help="write the wisdom as JSON here")
    d.set_defaults(func=cmd_distill)
    dm = sub.add_parser("demo", help="the closed loop on this repository's history, briefly")
    dm.add_argument("--repo", type=Path, help="a git repository (default: the one here)")
    dm.add_argument("--evaluations", type=int, default=3, help="versions to evaluate")
    dm.add_argument("--window", type=int, default=2000, help="commits that give the cases")
    dm.add_argument("--output", type=Path, default=Path("best_params.json"))
    dm.set_defaults(func=cmd_demo)
    s = sub.add_parser("status", help="queues, episodes, parameters, last distillation")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
    q = sub.add_parser("dlq", help="dead letters: list | show ID | retry [ID] | purge")
    q.add_argument("action", choices=["list", "show", "retry", "purge"])
    q.add_argument("id", nargs="?")
    q.add_argument("--limit", type=int, default=50)
    q.set_defaults(func=cmd_dlq)
    pp = sub.add_parser("params", help="write a version's parameters as params.json")
    which = pp.add_mutually_exclusive_group()
    which.add_argument("--version", type=int)
    which.add_argument("--best", action="store_true")
    pp.add_argument("--output", type=Path)
    pp.set_defaults(func=cmd_params)
    h = sub.add_parser("history", help="parameter versions with NDCG and provenance")
    h.add_argument("--limit", type=int, default=30)
    h.set_defaults(func=cmd_history)
    r = sub.add_parser("report-eval", help="report NDCG measured for a parameter version")
    r.add_argument("--version", type=int, required=True)
    r.add_argument("--ndcg", type=float, required=True, help="mean NDCG over the cases")
    r.add_argument("--cases", type=int, required=True)
    r.add_argument("--per-case", help="JSON file with a list of per-case NDCG scores")
    r.set_defaults(func=cmd_report_eval)
    ps = sub.add_parser("push", help="push failures from stdin (JSONL) as they arrive")
    ps.add_argument("--flush", action="store_true",
                    help="at end of input, enqueue partial batches now (not after the wait)")
    ps.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    ps.set_defaults(func=cmd_push)
    sv = sub.add_parser("serve", help="run the HTTP API (uvicorn)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--log-level", default="info")
    sv.add_argument("--access-log", action="store_true", help="log every request")
    sv.set_defaults(func=cmd_serve)
    rep = sub.add_parser("report", help="write the dashboard as a self-contained HTML file")
    rep.add_argument("--output", type=Path, default=Path("report.html"))
    rep.set_defaults(func=cmd_report)
    loop.add_parsers(sub)
    recommend.add_parsers(sub)
    for sp in (e, o, d, q, r, dm):
        sp.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    return p


if __name__ == "__main__":
    sys.exit(main())
