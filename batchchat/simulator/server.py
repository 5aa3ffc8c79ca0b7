"""The HTTP server: a raw asyncio `Protocol` with the `httptools` parser (uvloop when present).

`SimulatorApp` turns one parsed request into a `Reply`; `_Connection` speaks HTTP/1.1 with
keep-alive and pipelining, and carries out the delays and the connection-level faults (drop,
hang, truncate). A raw protocol is both the fastest stack measured here and the only one that
gives full control over what reaches the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import httptools
import orjson

from batchchat.simulator import responses as rs
from batchchat.simulator import tokens as tk
from batchchat.simulator.batch import BatchService
from batchchat.simulator.config import SimulatorConfig
from batchchat.simulator.faults import FaultPlan
from batchchat.simulator.limits import Limiter, format_duration
from batchchat.simulator.models import ModelNotFound, ModelTable, check_arguments
from batchchat.simulator.queueing import WorkerPool
from batchchat.simulator.stats import Stats

__all__ = ["Reply", "SimulatorApp", "SimulatorServer", "start_server"]

NORMAL, DROP, HANG, TRUNCATE = 0, 1, 2, 3
JSON = b"application/json"

_REASONS = {
    200: b"200 OK",
    400: b"400 Bad Request",
    401: b"401 Unauthorized",
    403: b"403 Forbidden",
    404: b"404 Not Found",
    405: b"405 Method Not Allowed",
    409: b"409 Conflict",
    429: b"429 Too Many Requests",
    500: b"500 Internal Server Error",
    502: b"502 Bad Gateway",
    503: b"503 Service Unavailable",
}


class Reply(NamedTuple):
    """What to send: status, body, extra header lines (CRLF-terminated), content type, delay, action.

    `work`: a model's answer, which needs a worker for `delay` seconds when `workers` is set.
    """

    status: int
    body: bytes
    headers: bytes = b""
    ctype: bytes = JSON
    delay: float = 0.0
    action: int = NORMAL
    work: bool = False


_SERVER_ERROR = rs.error_body(
    "The server had an error while processing your request. Sorry about that!", "server_error"
)
_BAD_GATEWAY = rs.error_body("Bad gateway.", "cf_bad_gateway", None, None)
_UNAVAILABLE = rs.error_body("The server is overloaded or not ready yet.", "server_error")
_OVERLOADED = rs.error_body("The engine is currently overloaded, please try again later.", "server_error")
_FAULT_429 = rs.error_body(
    "Rate limit reached (simulated). Please try again later.", "requests", None, "rate_limit_exceeded"
)
_FORBIDDEN = rs.error_body(
    "You are not allowed to use this resource with this API key (simulated 403).",
    "invalid_request_error",
    None,
    "permission_denied",
)
_NON_JSON = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
_NOT_JSON_OBJECT = rs.error_body(
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
    "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
    "invalid_request_error",
)
_INSUFFICIENT_QUOTA = rs.error_body(
    "You exceeded your current quota, please check your plan and billing details. For more information on this "
    "error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
    "insufficient_quota",
    None,
    "insufficient_quota",
)
_RETRY_1S = b"retry-after: 1\r\nretry-after-ms: 1000\r\n"


def _mask_key(key: str) -> str:
    return key[:3] + "*" * 3 + key[-4:] if len(key) > 8 else "*" * len(key)


class SimulatorApp:
    """Routing and behaviour: one parsed request in, one `Reply` out. Owned by one event loop."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.clock: Callable[[], float] = config.clock
        self.limiter = Limiter(
            config.rpm,
            config.tpm,
            config.limit_window,
            config.clock,
            config.rate_limit_headers,
            config.limit_kind,
            config.model_limits,
            config.limit_headers,
        )
        self.models = ModelTable(config.models, config.model_limits)
        self.retry_style = config.retry_after_style
        self.rid_header = config.request_id_header.encode() + b": req_"
        self.rids = 0
        self.faults = FaultPlan(config.seed, config.fault_rates, config.fault_sequence)
        self.stats = Stats(config.clock)
        self.rng = random.Random(config.seed)
        self.k = 0
        self.ids = 0
        self.default_cap = config.default_max_tokens
        self.answer_tokens = config.answer_tokens
        self.seed = config.seed
        self.latency = config.latency_ms > 0 or config.ms_per_token > 0 or config.latency_max_ms is not None
        self.routes: dict[bytes, tuple[bytes, Callable[..., Reply]]] = {
            b"/v1/chat/completions": (b"POST", self._chat),
            b"/v1/completions": (b"POST", self._completions),
            b"/v1/embeddings": (b"POST", self._embeddings),
            b"/v1/responses": (b"POST", self._responses),
            b"/v1/models": (b"GET", self._models),
            b"/stats": (b"GET", self._stats),
            b"/stats/reset": (b"POST", self._stats_reset),
            b"/health": (b"GET", self._health),
        }
        self.batch = BatchService(self)

    def reset_stats(self) -> None:
        """Zero the stats and restart the request numbering (so fault_sequence replays)."""
        self.stats.reset()
        self.k = 0

    # ---- entry point -------------------------------------------------------------------------

    def handle(self, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> Reply:
        """Answer one request."""
        q = path.find(b"?")
        query = b""
        if q >= 0:
            path, query = path[:q], path[q + 1 :]
        route = self.routes.get(path)
        if route is None and path.startswith((b"/v1/files", b"/v1/batches")):  # the Batch API: batch.py
            answer = self.batch.handle(method, path, query, headers, body)
            action = DROP if answer.drop else NORMAL
            return self._count(Reply(answer.status, answer.body, answer.headers, answer.ctype, action=action))
        if route is None and path.startswith(b"/openai/deployments/"):  # Azure-style path
            rest = path.split(b"/", 4)[-1] if path.count(b"/") >= 4 else b""
            route = self.routes.get(b"/v1/" + rest)
        if route is None or route[0] != method:
            if not path.startswith(b"/stats"):
                self.stats.requests += 1
            if route is None:
                msg = f"Invalid URL ({method.decode('latin-1')} {path.decode('latin-1')})"
                return self._count(Reply(404, rs.error_body(msg, "invalid_request_error")))
            msg = f"Method {method.decode('latin-1')} not allowed on {path.decode('latin-1')}"
            allow = b"allow: " + route[0] + b"\r\n"
            return self._count(Reply(405, rs.error_body(msg, "invalid_request_error"), allow))
        return route[1](headers, body)

    def _count(self, reply: Reply) -> Reply:
        """Count the reply by status and stamp it with a request id."""
        responses = self.stats.responses
        responses[reply.status] = responses.get(reply.status, 0) + 1
        self.rids = rids = self.rids + 1
        return reply._replace(headers=reply.headers + b"%s%032x\r\n" % (self.rid_header, rids))

    def _key(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        for name, value in headers:
            if name == b"authorization":
                if value[:7].lower() == b"bearer ":
                    return value[7:].strip().decode("latin-1")
                return value.decode("latin-1")
            if name == b"api-key":
                return value.decode("latin-1")
        return None

    # ---- API routes --------------------------------------------------------------------------

    def _api(
        self, headers: list[tuple[bytes, bytes]], raw: bytes, run: Callable[[dict[str, Any], str], Reply]
    ) -> Reply:
        stats = self.stats
        stats.requests += 1
        k = self.k
        self.k = k + 1
        key = self._key(headers)
        bucket = key or ""
        limiter = self.limiter
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not self.models.serves(model):
            model = ""  # rate-limit headers of the key's default limits
        expected = self.config.api_key
        if expected is not None and key != expected:
            if key is None:
                msg = (
                    "You didn't provide an API key. You need to provide your API key in an Authorization "
                    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                )
            else:
                msg = f"Incorrect API key provided: {_mask_key(key)}. The simulator expects its --api-key."
            err = rs.error_body(msg, "invalid_request_error", None, "invalid_api_key")
            return self._count(Reply(401, err, limiter.headers(bucket, model)))
        fault = self.faults.fault_for(k)
        if fault is not None:
            faults = stats.faults
            faults[fault] = faults.get(fault, 0) + 1
            return self._count(self._fault(fault, headers, limiter.headers(bucket, model)))
        if not isinstance(body, dict):
            return self._count(Reply(400, _NOT_JSON_OBJECT, limiter.headers(bucket)))
        overload_at = self.config.overload_at
        if overload_at is not None and stats.in_flight > overload_at:
            return self._count(Reply(503, _OVERLOADED, limiter.headers(bucket, model)))
        try:
            return self._count(run(body, bucket))
        except rs.InvalidRequest as exc:
            err = rs.error_body(exc.message, "invalid_request_error", exc.param, exc.code)
            return self._count(Reply(400, err, limiter.headers(bucket, model)))
        except ModelNotFound as exc:
            return self._count(Reply(404, exc.body()))

    def _fault(self, fault: str, headers: list[tuple[bytes, bytes]], rl: bytes) -> Reply:
        if fault == "500":
            return Reply(500, _SERVER_ERROR, rl)
        if fault == "502":
            return Reply(502, _BAD_GATEWAY, rl)
        if fault == "503":
            return Reply(503, _UNAVAILABLE, rl)
        if fault == "503_retry_after":
            return Reply(503, _UNAVAILABLE, rl + b"retry-after: 1\r\n")
        if fault == "429":
            return Reply(429, _FAULT_429, rl)
        if fault == "429_retry_after":
            return Reply(429, _FAULT_429, rl + self._retry_headers(1.0))
        if fault == "insufficient_quota":
            return Reply(429, _INSUFFICIENT_QUOTA, rl)
        if fault == "403":
            return Reply(403, _FORBIDDEN, rl)
        if fault == "drop":
            return Reply(0, b"", action=DROP)
        if fault == "hang":
            return Reply(0, b"", action=HANG)
        if fault == "truncate":
            return Reply(200, _truncate_body(), rl, action=TRUNCATE)
        if fault == "non_json":
            return Reply(200, _NON_JSON, rl, b"text/html; charset=utf-8")
        # echo_headers
        echoed = "; ".join(f"{n.decode('latin-1')}: {v.decode('latin-1')}" for n, v in headers)
        msg = f"Malformed request (simulated). Request headers: {echoed}"
        body = rs.error_body(msg, "invalid_request_error")
        return Reply(400, body, rl)

    def _retry_headers(self, wait: float) -> bytes:
        """The retry header lines of a 429 in the configured style, for a wait of `wait` seconds."""
        style = self.retry_style
        if style == "openai":
            if wait == 1.0:
                return _RETRY_1S
            wait_ms = max(1, math.ceil(wait * 1000 - 1e-6))
            return f"retry-after: {max(1, math.ceil(wait_ms / 1000))}\r\nretry-after-ms: {wait_ms}\r\n".encode()
        if style == "litellm":  # LiteLLM: the seconds left in its calendar-minute window, whatever the wait
            return b"llm_provider-retry-after: %d\r\n" % max(1, math.ceil(self.limiter.minute_left() - 1e-6))
        return b""

    def _admit(self, bucket: str, model: str, prompt: int, charge: int) -> Reply | None:
        """Charge the limiter; a 429 `Reply` when refused, None when admitted."""
        limiter = self.limiter
        if not limiter.enabled:
            self.stats.admitted(charge, model)
            return None
        decision = limiter.admit(bucket, charge, model)
        if decision.ok:
            self.stats.admitted(charge, model)
            return None
        kind = decision.kind
        self.stats.limited(kind, model)
        rl = limiter.headers(bucket, model)
        unit, short = ("requests", "RPM") if kind == "requests" else ("tokens", "TPM")
        if math.isinf(decision.wait):
            msg = (
                f"Request too large for {model} in organization org-simulator on tokens per min (TPM): "
                f"Limit {decision.limit}, Requested {decision.requested}. The input or output tokens must be "
                "reduced in order to run successfully."
            )
            return Reply(429, rs.error_body(msg, "tokens", None, "rate_limit_exceeded"), rl)
        wait_ms = max(1, math.ceil(decision.wait * 1000 - 1e-6))
        msg = (
            f"Rate limit reached for {model} in organization org-simulator on {unit} per min ({short}): "
            f"Limit {decision.limit}, Used {decision.used}, Requested {decision.requested}. "
            f"Please try again in {format_duration(wait_ms / 1000)}."
        )
        retry = self._retry_headers(wait_ms / 1000)
        return Reply(429, rs.error_body(msg, kind, None, "rate_limit_exceeded"), rl + retry)

    def _delay(self, completion: int) -> float:
        """Seconds to wait before answering (0 when no latency is configured)."""
        cfg = self.config
        base = cfg.latency_ms
        if cfg.latency_max_ms is not None:
            base = self.rng.uniform(cfg.latency_ms, cfg.latency_max_ms)
        ms = base + cfg.ms_per_token * completion
        if cfg.jitter:
            ms *= 1.0 + self.rng.uniform(-cfg.jitter, cfg.jitter)
        capacity = cfg.capacity
        if capacity is not None and self.stats.in_flight > capacity:
            ms *= self.stats.in_flight / capacity
        return ms / 1000.0

    def _next_id(self) -> str:
        self.ids += 1
        return f"sim{self.ids:021x}"

    def _finish(self, bucket: str, payload: dict[str, Any], prompt: int, completion: int) -> Reply:
        model = payload["model"]
        self.stats.billed(prompt, completion, model)
        delay = self._delay(completion) if self.latency else 0.0
        return Reply(200, orjson.dumps(payload), self.limiter.headers(bucket, model), JSON, delay, work=True)

    def _chat(self, headers: list[tuple[bytes, bytes]], raw: bytes) -> Reply:
        return self._api(headers, raw, self._run_chat)

    def _run_chat(self, body: dict[str, Any], bucket: str) -> Reply:
        check_arguments("chat", body)
        model, cap, n = rs.common(body, ("max_completion_tokens", "max_tokens"))
        messages = rs.check_chat(body)
        self.models.check(model)
        cap = cap or self.default_cap
        prompt = tk.message_tokens(messages)
        refused = self._admit(bucket, model, prompt, prompt + cap * n)
        if refused is not None:
            return refused
        h = tk.body_hash(self.seed, body)
        counts = [tk.choice_tokens(h, i, self.answer_tokens, cap) for i in range(n)]
        payload = rs.chat_body(self._next_id(), int(time.time()), model, counts, cap, prompt)
        return self._finish(bucket, payload, prompt, sum(counts))

    def _completions(self, headers: list[tuple[bytes, bytes]], raw: bytes) -> Reply:
        return self._api(headers, raw, self._run_completions)

    def _run_completions(self, body: dict[str, Any], bucket: str) -> Reply:
        check_arguments("completions", body)
        model, cap, n = rs.common(body, ("max_tokens",))
        prompt_data = rs.check_items(body, "prompt")
        self.models.check(model)
        cap = cap or self.default_cap
        prompt = tk.input_items_tokens(prompt_data)
        prompts = 1 if isinstance(prompt_data, str) or isinstance(prompt_data[0], int) else len(prompt_data)
        refused = self._admit(bucket, model, prompt, prompt + cap * n * prompts)
        if refused is not None:
            return refused
        h = tk.body_hash(self.seed, body)
        counts = [tk.choice_tokens(h, i, self.answer_tokens, cap) for i in range(n * prompts)]
        payload = rs.completion_body(self._next_id(), int(time.time()), model, counts, cap, prompt)
        return self._finish(bucket, payload, prompt, sum(counts))

    def _responses(self, headers: list[tuple[bytes, bytes]], raw: bytes) -> Reply:
        return self._api(headers, raw, self._run_responses)

    def _run_responses(self, body: dict[str, Any], bucket: str) -> Reply:
        check_arguments("responses", body)
        model, cap, _n = rs.common(body, ("max_output_tokens",))
        rs.check_responses_input(body)
        self.models.check(model)
        cap = cap or self.default_cap
        prompt = tk.responses_tokens(body)
        refused = self._admit(bucket, model, prompt, prompt + cap)
        if refused is not None:
            return refused
        count = tk.choice_tokens(tk.body_hash(self.seed, body), 0, self.answer_tokens, cap)
        payload = rs.responses_body(self._next_id(), int(time.time()), model, count, cap, prompt)
        return self._finish(bucket, payload, prompt, count)

    def _embeddings(self, headers: list[tuple[bytes, bytes]], raw: bytes) -> Reply:
        return self._api(headers, raw, self._run_embeddings)

    def _run_embeddings(self, body: dict[str, Any], bucket: str) -> Reply:
        check_arguments("embeddings", body)
        model, _cap, _n = rs.common(body, ())
        data = rs.check_items(body, "input")
        self.models.check(model)
        dims = body.get("dimensions")
        if dims is None:
            dims = self.config.embedding_dims
        elif not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 4096:
            raise rs.InvalidRequest("Invalid 'dimensions': expected an integer in [1, 4096].", "dimensions")
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            msg = "Invalid 'encoding_format': expected 'float' or 'base64'."
            raise rs.InvalidRequest(msg, "encoding_format")
        prompt = tk.input_items_tokens(data)
        refused = self._admit(bucket, model, prompt, prompt)
        if refused is not None:
            return refused
        self.stats.billed(prompt, 0, model)
        payload = rs.embeddings_body(self.seed, model, data, dims, prompt, fmt == "base64")
        delay = self._delay(0) if self.latency else 0.0
        return Reply(200, orjson.dumps(payload), self.limiter.headers(bucket, model), JSON, delay, work=True)

    # ---- plain routes ------------------------------------------------------------------------

    def _models(self, headers: list[tuple[bytes, bytes]], raw: bytes) -> Reply:
        self.stats.requests += 1
        return self._count(Reply(200, self.models.list_body(int(time.time()))))

    def _stats(self, headers: list[tuple[bytes, bytes]], raw: bytes) -> Reply:
        return Reply(200, orjson.dumps(self.stats.snapshot()))

    def _stats_reset(self, headers: list[tuple[bytes, bytes]], raw: bytes) -> Reply:
        self.reset_stats()
        return Reply(200, b'{"reset":true}')

    def _health(self, headers: list[tuple[bytes, bytes]], raw: bytes) -> Reply:
        return Reply(200, b'{"status":"ok"}')


def _truncate_body() -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-truncated",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "simulator",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": tk.filler(32)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 32, "total_tokens": 42},
        }
    )


def _head(status: int, body: bytes, headers: bytes, ctype: bytes, keep_alive: bool) -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s%s\r\n" % (
        _REASONS.get(status) or b"%d Unknown" % status,
        ctype,
        len(body),
        headers,
        b"" if keep_alive else b"connection: close\r\n",
    )


# method, url, headers, body, keep-alive, counted in in_flight
_Request = tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes, bool, bool]


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: parse, answer in order (pipelining), apply delays and faults."""

    __slots__ = (
        "app",
        "body",
        "busy",
        "headers",
        "loop",
        "outstanding",
        "parser",
        "queue",
        "server",
        "serving",
        "timer",
        "transport",
        "url",
        "waiting",
    )

    def __init__(self, server: SimulatorServer) -> None:
        self.server = server
        self.app = server.app
        self.loop = server.loop
        self.transport: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.queue: deque[_Request] = deque()
        self.busy = False
        self.timer: asyncio.Handle | None = None
        self.outstanding = 0
        self.serving = False  # holds a worker of the pool
        self.waiting: Callable[[], None] | None = None  # queued for a worker

    # asyncio callbacks
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        pool = self.server.pool
        if pool is not None:
            if self.waiting is not None:
                pool.cancel(self.waiting)
                self.waiting = None
            if self.serving:
                self.serving = False
                pool.release()
        self.app.stats.in_flight -= self.outstanding
        self.outstanding = 0
        self.queue.clear()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._close()
        except httptools.HttpParserError:
            if self.transport is not None and not self.busy:
                body = rs.error_body("Malformed HTTP request.", "invalid_request_error")
                self.transport.write(_head(400, body, b"", JSON, False) + body)
            self._close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        counted = not self.url.startswith((b"/stats", b"/health"))
        if counted:
            stats = self.app.stats
            stats.in_flight += 1
            if stats.in_flight > stats.max_in_flight:
                stats.max_in_flight = stats.in_flight
            self.outstanding += 1
        request = (
            self.parser.get_method(),
            self.url,
            self.headers,
            b"".join(self.body),
            self.parser.should_keep_alive(),
            counted,
        )
        if self.busy:
            self.queue.append(request)
        else:
            self._process(request)

    # answering
    def _process(self, request: _Request) -> None:
        method, url, headers, body, keep_alive, counted = request
        reply = self.app.handle(method, url, headers, body)
        action = reply.action
        if action == NORMAL:
            pool = self.server.pool
            if pool is not None and reply.work:
                self.busy = True
                start = self.waiting = partial(self._serve, reply, keep_alive, counted)
                pool.enter(start)
            elif reply.delay > 0:
                self.busy = True
                self.timer = self.loop.call_later(reply.delay, self._send_later, reply, keep_alive, counted)
            else:
                self._send(reply, keep_alive, counted)
        elif action == HANG:
            self.busy = True  # keep reading (to notice a close), never answer
        elif action == DROP:
            self._close()
        else:  # TRUNCATE
            half = reply.body[: len(reply.body) // 2]
            self.transport.write(_head(reply.status, reply.body, reply.headers, reply.ctype, False) + half)
            self._close()

    def _serve(self, reply: Reply, keep_alive: bool, counted: bool) -> None:
        """A worker is ours: answer after the service time (never synchronously, so the pool never recurses)."""
        self.waiting = None
        self.serving = True
        if reply.delay > 0:
            self.timer = self.loop.call_later(reply.delay, self._served, reply, keep_alive, counted)
        else:
            self.timer = self.loop.call_soon(self._served, reply, keep_alive, counted)

    def _served(self, reply: Reply, keep_alive: bool, counted: bool) -> None:
        self.serving = False
        pool = self.server.pool
        if pool is not None:
            pool.release()
        self._send_later(reply, keep_alive, counted)

    def _send(self, reply: Reply, keep_alive: bool, counted: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        if counted:
            self.outstanding -= 1
            self.app.stats.in_flight -= 1
        transport.write(_head(reply.status, reply.body, reply.headers, reply.ctype, keep_alive) + reply.body)
        if not keep_alive:
            self._close()

    def _send_later(self, reply: Reply, keep_alive: bool, counted: bool) -> None:
        self.timer = None
        self.busy = False
        self._send(reply, keep_alive, counted)
        while self.queue and not self.busy and self.transport is not None:
            self._process(self.queue.popleft())

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once (server shutdown)."""
        if self.transport is not None:
            self.transport.abort()


class SimulatorServer:
    """A listening simulator bound to one event loop."""

    def __init__(self, config: SimulatorConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.app = SimulatorApp(config)
        self.pool = WorkerPool(config.workers, self.app.stats) if config.workers else None
        self.connections: set[_Connection] = set()
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> None:
        """Bind and listen; `port` is set afterwards (a free one when config.port is 0)."""
        self.server = await self.loop.create_server(
            lambda: _Connection(self), self.config.host, self.config.port, backlog=4096, reuse_address=True
        )
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def base_url(self) -> str:
        """`http://host:port/v1`."""
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"

    async def stop(self) -> None:
        """Stop listening and drop every open connection, hung ones included."""
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.abort()
        if self.server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)


async def start_server(config: SimulatorConfig) -> SimulatorServer:
    """Start a simulator on the running loop."""
    server = SimulatorServer(config, asyncio.get_running_loop())
    await server.start()
    return server
