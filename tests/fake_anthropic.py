"""A local HTTP server that speaks the Anthropic Messages API, for tests and benchmarks.

It is the only stand-in the test suite uses: the real ``anthropic`` SDK talks to it through
``base_url``. It answers ``POST /v1/messages`` with a ``tool_use`` block whose input is built
from the request's own tool schema, reports usage (prompt-cache creation and read counters
emulated on the ``cache_control``'d prefix), waits a configurable latency, and injects
faults on request.

Usage::

    fake = FakeAnthropic(latency=1.0)
    base_url = fake.start()              # "http://127.0.0.1:PORT"; point the SDK here
    fake.faults.push(Fault.RATE_LIMIT, times=2)   # the next two requests get a 429
    ...
    fake.stats()                         # counters: total, by status, tokens, ...
    fake.records()                       # one RequestRecord per request, in arrival order
    fake.max_in_window(2.0)              # most requests (tokens=True: billed tokens) in 2 s
    fake.stop()

A worker subprocess reaches it with ``tests.services.worker_env(redis_url,
**reasoner_env(fake.base_url))`` (``RIPMAP_REASONER=anthropic``, a dummy key, the base URL).
Token counts are a quarter of the JSON text's length; the prompt cache is written by the
first request whose tools + cache_control'd system prefix is at least ``min_cache_tokens``
long and read by later ones (5 minutes, refreshed on read), as the API does.

Faults come from three places, checked in this order:

1. in-band markers in the request's messages, ``fake-fault:429*2,malformed`` (for example
   in a failure's query): the conversation (keyed by its first user message) gets the
   listed faults on its successive requests, then normal answers. This is how pipeline
   tests give each batch its own fate through a real worker.
2. ``faults.push(kind, times)``: a FIFO consumed by the next requests, whoever sends them.
3. ``faults.rates = {kind: probability}``: seeded random faults, for benchmarks.

Fault kinds are the values of ``Fault``. A ``responder`` callable may replace the generated
tool input (return None to keep it). Run it standalone for benchmarks in their own process:
``python -m tests.fake_anthropic --latency 1.0 --port 8765`` (prints the base URL; then
``GET /fake/stats`` returns the counters and ``POST /fake/reset`` clears them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Json = dict[str, Any]
Responder = Callable[[Json], Any]


class Fault(StrEnum):
    """What the server can do instead of a normal answer."""

    RATE_LIMIT = "429"  # rate_limit_error with a retry-after header
    OVERLOADED = "529"  # overloaded_error
    SERVER_ERROR = "500"  # api_error
    SLOW = "slow"  # answers only after ``slow_seconds`` (longer than the client's timeout)
    MALFORMED = "malformed"  # tool input that violates the schema (unknown param, range)
    STRING_INPUT = "string-input"  # tool input as a JSON string instead of an object
    TEXT_ONLY = "text"  # no tool_use: a free-text answer in the seed's markdown format
    GARBAGE = "garbage"  # no tool_use and nothing parsable
    BAD_REQUEST = "400"  # invalid_request_error
    UNAUTHORIZED = "401"  # authentication_error
    ECHO_KEY = "echo-key"  # 401 whose message repeats the API key it received (hostile)


ERRORS: dict[Fault, tuple[int, str]] = {
    Fault.RATE_LIMIT: (429, "rate_limit_error"),
    Fault.OVERLOADED: (529, "overloaded_error"),
    Fault.SERVER_ERROR: (500, "api_error"),
    Fault.BAD_REQUEST: (400, "invalid_request_error"),
    Fault.UNAUTHORIZED: (401, "authentication_error"),
    Fault.ECHO_KEY: (401, "authentication_error"),
}
MARKER = re.compile(r"fake-fault:([\w\-]+(?:\*\d+)?(?:,[\w\-]+(?:\*\d+)?)*)")
CACHE_TTL_SECONDS = 300.0


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it."""

    arrived: float  # time.time() when the request line was read
    finished: float
    status: int
    fault: str  # "" for a normal answer
    conversation: str  # digest of the first user message
    turn: int  # how many messages the request carried (1 = first call, 3 = a repair turn)
    tool: str  # the tool the request forced, "" when none
    api_key: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    @property
    def billed_tokens(self) -> int:
        """Input (uncached), cache creation and output tokens: what a rate limit counts."""
        return self.input_tokens + self.cache_creation_input_tokens + self.output_tokens


@dataclass
class Faults:
    """Fault injection control; every method is thread-safe."""

    rates: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    _queue: deque[str] = field(default_factory=deque)
    _scripts: dict[str, list[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _rng: random.Random = field(default_factory=random.Random)

    def push(self, kind: Fault | str, times: int = 1) -> None:
        """The next ``times`` requests (from anyone) get ``kind``."""
        with self._lock:
            self._queue.extend([Fault(kind).value] * times)

    def clear(self) -> None:
        """Forget queued, scripted and random faults."""
        with self._lock:
            self._queue.clear()
            self._scripts.clear()
            self.rates = {}

    def pending(self) -> int:
        """How many queued faults are still to be served."""
        with self._lock:
            return len(self._queue)

    def next_for(self, conversation: str, text: str) -> str:
        """The fault for this request ("" for none), consuming it."""
        with self._lock:
            script = self._scripts.get(conversation)
            if script is None:
                script = self._scripts[conversation] = _parse_marker(text)
            if script:
                return script.pop(0)
            if self._queue:
                return self._queue.popleft()
            for kind, p in self.rates.items():
                if self._rng.random() < p:
                    return Fault(kind).value
        return ""


def _parse_marker(text: str) -> list[str]:
    m = MARKER.search(text)
    if not m:
        return []
    out: list[str] = []
    for item in m.group(1).split(","):
        kind, _, times = item.partition("*")
        out += [Fault(kind).value] * int(times or 1)
    return out


class FakeAnthropic:
    """The Messages API on 127.0.0.1, in a background thread pool (one thread per request)."""

    def __init__(
        self,
        latency: float = 0.0,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        slow_seconds: float = 30.0,
        retry_after: float = 1.0,
        min_cache_tokens: int = 1024,
        seed: int = 0,
        responder: Responder | None = None,
        keep_records: bool = True,
    ) -> None:
        self.latency = latency
        self.slow_seconds = slow_seconds
        self.retry_after = retry_after
        self.min_cache_tokens = min_cache_tokens
        self.responder = responder
        self.keep_records = keep_records
        self.faults = Faults(seed=seed)
        self.faults._rng.seed(seed)
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._counts: Counter[str] = Counter()
        self._cache: dict[str, float] = {}
        self._in_flight = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> str:
        """Start serving; returns the base URL to give the SDK."""
        handler = type("Handler", (_Handler,), {"fake": self})
        server = _Server((self._host, self._port), handler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="fake-anthropic", daemon=True)
        self._thread.start()
        return self.base_url

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._server is None:
            raise RuntimeError("FakeAnthropic is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        """Stop serving (requests in flight are abandoned)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeAnthropic:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what happened ---------------------------------------------------------------------

    def records(self) -> list[RequestRecord]:
        """Every request so far, in arrival order (empty when ``keep_records`` is off)."""
        with self._lock:
            return sorted(self._records, key=lambda r: r.arrived)

    def stats(self) -> dict[str, int]:
        """Counters: ``requests`` (on arrival), ``status:<code>``, ``fault:<kind>``, token sums,
        ``in_flight``, ``max_in_flight``, ``client_gone`` (answers the client left before)."""
        with self._lock:
            return {**self._counts, "in_flight": self._in_flight}

    def reset(self) -> None:
        """Forget records, counters, the prompt cache and all faults."""
        with self._lock:
            self._records.clear()
            self._counts.clear()
            self._cache.clear()
        self.faults.clear()

    def max_in_window(self, seconds: float, tokens: bool = False) -> int:
        """The most requests (or billed tokens) that arrived within any ``seconds`` span."""
        rows = [(r.arrived, r.billed_tokens if tokens else 1) for r in self.records()]
        best, total, left = 0, 0, 0
        for right in range(len(rows)):
            total += rows[right][1]
            while rows[right][0] - rows[left][0] >= seconds:
                total -= rows[left][1]
                left += 1
            best = max(best, total)
        return best

    # -- answering -------------------------------------------------------------------------

    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            c = self._counts
            c[f"status:{rec.status}"] += 1
            if rec.fault:
                c[f"fault:{rec.fault}"] += 1
            c["input_tokens"] += rec.input_tokens
            c["output_tokens"] += rec.output_tokens
            c["cache_creation_input_tokens"] += rec.cache_creation_input_tokens
            c["cache_read_input_tokens"] += rec.cache_read_input_tokens
            if self.keep_records:
                self._records.append(rec)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._counts["requests"] += 1  # counted on arrival: a slow answer counts at once
            self._counts["max_in_flight"] = max(self._counts["max_in_flight"], self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _cache_lookup(self, key: str, now: float) -> bool:
        """True when the prefix was cached and is still fresh (a read refreshes it)."""
        with self._lock:
            hit = self._cache.get(key, 0.0) > now
            if hit:
                self._cache[key] = now + CACHE_TTL_SECONDS
            return hit

    def _cache_store(self, key: str, now: float) -> None:
        with self._lock:
            self._cache[key] = now + CACHE_TTL_SECONDS


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 2048  # a benchmark opens hundreds of connections at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that gave up (timeouts) close their sockets: not worth a traceback."""


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAnthropic
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: with Nagle on, the second waits for the
    # client's delayed ACK of the first, adding ~40 ms to every answer
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a benchmark sends thousands of requests."""

    def do_GET(self) -> None:
        """``GET /fake/stats``: the counters, for a benchmark running the server elsewhere."""
        if self.path == "/fake/stats":
            self._send(200, self.fake.stats())
        else:
            self._send(404, _error("not_found_error", f"no route {self.path}"))

    def do_POST(self) -> None:
        arrived = time.time()
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path == "/fake/reset":
            self.fake.reset()
            self._send(200, {"reset": True})
            return
        if self.path.split("?")[0] != "/v1/messages":
            self._send(404, _error("not_found_error", f"no route {self.path}"))
            return
        self.fake._enter()
        try:
            self._answer(arrived, body)
        finally:
            self.fake._leave()

    def _answer(self, arrived: float, body: bytes) -> None:
        fake = self.fake
        bearer = self.headers.get("authorization", "")
        key = self.headers.get("x-api-key") or bearer.removeprefix("Bearer ").strip()
        try:
            req = json.loads(body)
            problem = _invalid(req)
        except ValueError:
            req, problem = {}, "body is not JSON"
        messages = req.get("messages", []) if isinstance(req, dict) else []
        conversation = _digest(messages[:1])
        base: dict[str, Any] = {"arrived": arrived, "conversation": conversation,
                                "turn": len(messages), "tool": _forced_tool(req), "api_key": key}
        if problem or not key:
            status = 400 if problem else 401
            kind = "invalid_request_error" if problem else "authentication_error"
            fake._record(RequestRecord(finished=time.time(), status=status, fault="", **base))
            self._send(status, _error(kind, problem or "an x-api-key or Authorization header"
                                      " is required"))
            return
        fault = fake.faults.next_for(conversation, json.dumps(messages))
        delay = fake.slow_seconds if fault == Fault.SLOW else fake.latency
        if delay:
            time.sleep(delay)
        if fault in ERRORS:
            status, kind = ERRORS[Fault(fault)]
            text = f"invalid API key {key}" if fault == Fault.ECHO_KEY else f"fake {kind}"
            headers = {"retry-after": f"{fake.retry_after:g}"} if status == 429 else {}
            if status == 529:
                headers["x-should-retry"] = "true"
            fake._record(RequestRecord(finished=time.time(), status=status, fault=fault, **base))
            self._send(status, _error(kind, text), headers)
            return
        message, usage = _message(fake, req, fault, arrived)
        # recorded before it is sent, so a client that has its answer finds it in records()
        fake._record(RequestRecord(finished=time.time(), status=200, fault=fault, **base,
                                   **usage))
        self._send(200, message)

    def _send(self, status: int, payload: Json, headers: dict[str, str] | None = None) -> bool:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", "req_" + uuid.uuid4().hex[:24])
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client timed out and left
            self.close_connection = True
            self.fake._count("client_gone")
            return False
        return True


def _invalid(req: Any) -> str:
    """What the real API would reject with a 400, in brief ("" when the request is fine)."""
    if not isinstance(req, dict):
        return "body must be an object"
    for name in ("model", "max_tokens", "messages"):
        if name not in req:
            return f"{name}: Field required"
    if not req["messages"] or req["messages"][0].get("role") != "user":
        return "messages: the first message must use the user role"
    choice = req.get("tool_choice") or {}
    names = [t.get("name") for t in req.get("tools", [])]
    if choice.get("type") == "tool" and choice.get("name") not in names:
        return f"tool_choice: tool {choice.get('name')!r} not found in tools"
    return ""


def _forced_tool(req: Any) -> str:
    choice = req.get("tool_choice") if isinstance(req, dict) else None
    return str(choice.get("name", "")) if isinstance(choice, dict) else ""


def _error(kind: str, message: str) -> Json:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _digest(value: Any) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def tokens(value: Any) -> int:
    """The fake's token count: a quarter of the JSON text's length, rounded up."""
    text = value if isinstance(value, str) else json.dumps(value)
    return math.ceil(len(text) / 4)


def _message(fake: FakeAnthropic, req: Json, fault: str, now: float) -> tuple[Json, dict[str, Any]]:
    tool = _tool(req)
    seed = _digest(req["messages"])
    if fault in (Fault.TEXT_ONLY, Fault.GARBAGE) or tool is None:
        text = _markdown_answer(seed) if fault != Fault.GARBAGE else "I am not sure, sorry."
        content: list[Json] = [{"type": "text", "text": text}]
        stop = "end_turn"
    else:
        tool_input = _tool_input(fake, req, tool, fault, seed)
        content = [{"type": "tool_use", "id": "toolu_" + seed, "name": tool["name"],
                    "input": tool_input}]
        stop = "tool_use"
    usage = _usage(fake, req, content, now)
    message = {"id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "role": "assistant",
               "model": req["model"], "content": content, "stop_reason": stop,
               "stop_sequence": None, "usage": usage}
    return message, usage


def _tool(req: Json) -> Json | None:
    name = _forced_tool(req)
    tools = [t for t in req.get("tools", []) if isinstance(t, dict)]
    return next((t for t in tools if t.get("name") == name), tools[0] if tools else None)


def _tool_input(fake: FakeAnthropic, req: Json, tool: Json, fault: str, seed: str) -> Any:
    schema = tool.get("input_schema", {})
    rng = random.Random(seed)
    value = example(schema, schema.get("$defs", {}), rng)
    if fake.responder is not None:
        custom = fake.responder(req)
        value = value if custom is None else custom
    if fault == Fault.MALFORMED:
        value = _malformed(value)
    elif fault == Fault.STRING_INPUT:
        value = json.dumps(value)
    return value


def _malformed(value: Any) -> Any:
    """Schema-violating input: an unknown parameter, a bad direction, confidence out of range."""
    if not isinstance(value, dict):
        return {"unexpected": True}
    bad = dict(value)
    if "proposed_changes" in bad:
        bad["proposed_changes"] = [{"param": "warp_factor", "direction": "sideways"}]
        bad["confidence"] = 1.7
    else:
        bad = {k: 42 for k in bad} or {"unexpected": True}
    return bad


def example(schema: Json, defs: Json, rng: random.Random, depth: int = 0) -> Any:
    """A value that satisfies ``schema`` (the subset of JSON Schema pydantic generates)."""
    if "$ref" in schema:
        return example(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, rng, depth)
    for combo in ("anyOf", "oneOf", "allOf"):
        if combo in schema:
            return example(schema[combo][0], defs, rng, depth)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: example(sub, defs, rng, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return _array(schema, defs, rng, depth)
    if kind in ("number", "integer"):
        return _number(schema, rng, integer=kind == "integer")
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "string":
        return _string(schema, rng)
    return None


def _array(schema: Json, defs: Json, rng: random.Random, depth: int) -> list[Any]:
    low, high = schema.get("minItems", 0), min(schema.get("maxItems", 3), 3)
    n = 0 if depth > 3 else rng.randint(max(low, min(1, high)), max(low, high))
    items = schema.get("items", {})
    out: list[Any] = []
    for _ in range(n * 4):  # distinct items (one change per parameter), a few tries
        value = example(items, defs, rng, depth + 1)
        if value not in out and _new_key(out, value):
            out.append(value)
        if len(out) == n:
            break
    return out


def _new_key(items: list[Any], value: Any) -> bool:
    """Objects with a ``param`` key stay unique by it."""
    if isinstance(value, dict) and "param" in value:
        return all(not isinstance(i, dict) or i.get("param") != value["param"] for i in items)
    return True


def _number(schema: Any, rng: random.Random, integer: bool) -> float | int:
    if "default" in schema and rng.random() < 0.8:
        return schema["default"]  # type: ignore[no-any-return]
    low = float(schema.get("minimum", schema.get("exclusiveMinimum", 0.0)))
    high = float(schema.get("maximum", schema.get("exclusiveMaximum", low + 1.0)))
    value = low + (high - low) * rng.uniform(0.05, 0.95)
    return int(value) if integer else round(value, 3)


def _string(schema: Json, rng: random.Random) -> str:
    words = ["ranking", "depth", "boost", "seed", "vendor", "focus", "recency", "churn"]
    text = " ".join(rng.choice(words) for _ in range(8))
    low, high = int(schema.get("minLength", 1)), int(schema.get("maxLength", 200))
    return (text * (1 + low // len(text)))[: max(low, min(high, len(text)))]


def _markdown_answer(seed: str) -> str:
    return (
        "Let me think about this.\n\n## Diagnosis\nRoot files crowd out the nested ones "
        f"({seed}).\n\n## Parameter Interactions\n- low alpha + high chat boost = tunnel vision\n\n"
        "## Proposed Changes\n- depth_weight_root: decrease medium \"root noise\"\n"
        "- depth_weight_deep: increase small \"nested files matter\"\n\n"
        "## Structural Insights\n- path tokens are not a ranking signal\n\n"
        "## Confidence\n0.6 — two consistent failures\n"
    )


def _usage(fake: FakeAnthropic, req: Json, content: list[Json], now: float) -> dict[str, Any]:
    """Token counts, with the cached prefix (tools + system up to the last cache_control)."""
    system = req.get("system", [])
    blocks = [{"type": "text", "text": system}] if isinstance(system, str) else list(system)
    marked = [i for i, b in enumerate(blocks) if isinstance(b, dict) and b.get("cache_control")]
    tools = req.get("tools", [])
    cut = marked[-1] + 1 if marked else 0
    prefix = tokens([tools, blocks[:cut]]) if marked else 0
    rest = tokens(req["messages"]) + tokens(blocks[cut:]) + (0 if marked else tokens(tools))
    created = read = 0
    if marked and prefix >= fake.min_cache_tokens:
        key = _digest([req["model"], tools, blocks[:cut]])
        if fake._cache_lookup(key, now):
            read = prefix
        else:
            created = prefix
            fake._cache_store(key, now)
    else:
        rest += prefix
    return {"input_tokens": rest, "output_tokens": tokens(content),
            "cache_creation_input_tokens": created, "cache_read_input_tokens": read}


DUMMY_KEY = "sk-ant-fake-0000"


def reasoner_env(base_url: str, api_key: str = DUMMY_KEY, **settings: str) -> dict[str, str]:
    """Environment that points a worker's ``anthropic`` reasoner at a fake server; merge it
    into ``tests.services.worker_env(redis_url, **reasoner_env(url))``. ``settings`` are
    more ``RIPMAP_*`` variables (e.g. ``RIPMAP_LLM_REQUESTS_PER_MINUTE="0"``)."""
    return {"RIPMAP_REASONER": "anthropic", "ANTHROPIC_API_KEY": api_key,
            "RIPMAP_ANTHROPIC_BASE_URL": base_url, **settings}


def main() -> None:
    """Serve until interrupted; prints the base URL on its first line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--fault-rate", action="append", default=[], metavar="KIND=P",
                        help="random fault probability, e.g. 429=0.01 (repeatable)")
    args = parser.parse_args()
    fake = FakeAnthropic(args.latency, host=args.host, port=args.port, keep_records=False)
    fake.faults.rates = {k: float(p) for k, p in (x.split("=") for x in args.fault_rate)}
    print(fake.start(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
