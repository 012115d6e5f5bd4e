"""``ripmap-optimizer``: the operator's command line."""

from __future__ import annotations

import argparse
import json
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

from producer import embedded, reading
from producer.api import InvalidInput, Producer, validate_failures
from schemas.errors import describe
from schemas.params import PARAM_SPECS, ParameterPoint
from schemas.scratchpad import ScratchpadSummary
from schemas.settings import Settings, get_settings
from schemas.tasks import EPISODE_QUEUE, MERGE_QUEUE
from worker import deadletters, store

out = Console()
err = Console(stderr=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = _parser().parse_args(argv)
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
            store.set_params(client, start_params)
        _wait(live, _submit(live, records), args.timeout)
        summary = store.summary(client)
    _write_outputs(summary, args.output, args.scratchpad)
    _print_summary(summary)
    return 0


def cmd_distill(args: argparse.Namespace, settings: Settings) -> int:
    """Distill the shared scratchpad now and write the wisdom."""
    with embedded.service(settings) as live:
        client = store.connect(live.state_url)
        wisdom_md = _distill_now(live, client, args.timeout)
    if wisdom_md is None:
        return 1
    if args.output:
        Path(args.output).write_text(wisdom_md)
        out.print(f"wisdom written to {args.output}")
    else:
        out.print(Markdown(wisdom_md))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Run the bundled sample failures, one distillation, and print what was learned."""
    records = reading.sample_failures()
    with embedded.service(settings) as live:
        client = store.connect(live.state_url)
        _wait(live, _submit(live, records), args.timeout)
        wisdom_md = _distill_now(live, client, args.timeout)
        summary = store.summary(client)
    _print_summary(summary)
    if wisdom_md:
        out.rule("Distilled wisdom")
        out.print(Markdown(wisdom_md))
    return 0 if wisdom_md else 1


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Queue depths, episodes merged, dead letters, parameters, last distillation."""
    with embedded.service(settings, workers=False) as live:
        client = store.connect(live.state_url)
        summary = store.summary(client)
        depths = _queue_depths(live)
        dead = deadletters.count(client)
        stats = client.hgetall("ripmap:stats") if args.json else {}
    if args.json:
        out.print_json(json.dumps({"queues": depths, "dead_letters": dead,
                                   "scratchpad": summary.model_dump(mode="json"), **stats}))
        return 0
    table = Table(title="ripmap-optimizer status", show_header=False)
    for queue, depth in depths.items():
        table.add_row(f"queue {queue}", str(depth))
    table.add_row("episodes merged", f"{summary.episodes} ({summary.unparsable} unparsable)")
    table.add_row("pending distillation", str(summary.pending_distill))
    table.add_row("dead letters", str(dead))
    table.add_row("wisdom version", str(summary.wisdom_version or "none yet"))
    out.print(table)
    _print_params(summary.params)
    return 0


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
        producer.send(letter.task, [letter.payload], None)
        deadletters.remove(client, letter.id)
    out.print(f"re-enqueued {len(letters)} dead letters")
    return 0 if letters else 1


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
        done = check()
        show(done)
        if done >= goal:
            return done
        if time.monotonic() > deadline:
            raise TimeoutError(f"{goal - done} of {goal} batches still running after {timeout}s")
        time.sleep(0.1)


def _distill_now(settings: Settings, client: redis.Redis, timeout: float) -> str | None:
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
    return wisdom.to_markdown()


def _queue_depths(settings: Settings) -> dict[str, int]:
    from kombu.connection import Connection

    depths = {}
    with Connection(settings.broker) as conn:
        channel = conn.default_channel
        for queue in (EPISODE_QUEUE, MERGE_QUEUE):
            try:
                depths[queue] = int(channel.queue_declare(queue, passive=True).message_count)
            except Exception:  # a queue never declared is empty
                depths[queue] = 0
    return depths


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


def _print_params(params: ParameterPoint) -> None:
    table = Table(title="Current parameters")
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
    d.set_defaults(func=cmd_distill)
    sub.add_parser("demo", help="run the bundled sample failures").set_defaults(func=cmd_demo)
    s = sub.add_parser("status", help="queues, episodes, parameters, last distillation")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
    q = sub.add_parser("dlq", help="dead letters: list | show ID | retry [ID] | purge")
    q.add_argument("action", choices=["list", "show", "retry", "purge"])
    q.add_argument("id", nargs="?")
    q.add_argument("--limit", type=int, default=50)
    q.set_defaults(func=cmd_dlq)
    for sp in (e, o, d, q, sub.choices["demo"]):
        sp.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    return p


if __name__ == "__main__":
    sys.exit(main())
