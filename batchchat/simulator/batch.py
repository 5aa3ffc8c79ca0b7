"""OpenAI's Batch API in the simulator: `/v1/files` and `/v1/batches`, driven by the clock.

No background task runs a batch. Its state is a function of the simulator clock, worked out on
each request (`BatchService.advance`): `validating` for `validate_seconds`, then (unless the
validation or the enqueued-token limit fails it) `in_progress` with lines done in file order at
`lines_per_second`, `finalizing`, `completed`; `expired` at `window_seconds` after creation when
the lines are not all done; `cancelling` then `cancelled` after a cancel. The decision a batch
meets at the end of its validation (its lines, and the prompt tokens already enqueued for its
model) is taken once, in the order of those instants, so the outcome does not depend on when
clients happen to poll. Tests drive it with a fake clock.

Shapes follow OpenAI's: the file object, the batch object (with `request_counts`, `errors`
`{object: "list", data: [{code, message, param, line}]}`, the nine timestamps, `usage`), list
pages `{object: "list", data, first_id, last_id, has_more}`, and output/error file lines
`{id: "batch_req_...", custom_id, response: {status_code, request_id, body} | null,
error: {code, message} | null}`. Answers come from the same generators as the online routes
(`responses`, `tokens`), but batch lines are never charged to the online rpm/tpm limiter.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import os
import time
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs

import orjson

from batchchat.simulator import responses as rs
from batchchat.simulator import tokens as tk
from batchchat.simulator.limits import format_duration
from batchchat.simulator.multipart import MultipartError, parse_form

if TYPE_CHECKING:
    from batchchat.simulator.server import SimulatorApp

__all__ = ["ENDPOINTS", "OPEN", "TERMINAL", "Answer", "BatchService"]

ENDPOINTS = ("/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions")
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
OPEN = frozenset({"validating", "in_progress", "finalizing"})
TERMINAL = frozenset({"failed", "completed", "expired", "cancelled"})
MAX_REPORTED_ERRORS = 100  # line errors listed in a failed batch's `errors.data`
OCTET = b"application/octet-stream"
JSON = b"application/json"

OK, SERVER_ERROR, INVALID = 0, 1, 2  # the outcome of one line

_SERVER_ERROR_BODY = {
    "error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}
_FAULT_500 = rs.error_body(
    "The server had an error while processing your request. Sorry about that!", "server_error"
)
_NOT_RUN = {
    "expired": {
        "code": "batch_expired",
        "message": "This request could not be executed before the completion window expired.",
    },
    "cancelled": {
        "code": "batch_cancelled",
        "message": "This request was not executed because the batch was cancelled.",
    },
}


class Answer(NamedTuple):
    """What the server sends (it makes a `Reply` of it): status, body, header lines, content type;
    `drop`: close the connection instead (the "lost" and "drop" faults)."""

    status: int
    body: bytes
    headers: bytes = b""
    ctype: bytes = JSON
    drop: bool = False


_DROPPED = Answer(0, b"", drop=True)


def _error(
    status: int, message: str, param: str | None = None, code: str | None = None, headers: bytes = b""
) -> Answer:
    return Answer(status, rs.error_body(message, "invalid_request_error", param, code), headers)


def _json(obj: Any) -> Answer:
    return Answer(200, orjson.dumps(obj))


def _line_error(code: str, message: str, line: int | None, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


class _Gate:
    """A requests-per-minute bucket holding one second's worth (at least 1): how long until one more fits."""

    __slots__ = ("capacity", "level", "rate", "rpm", "stamp")

    def __init__(self, rpm: int, now: float) -> None:
        self.rpm = rpm
        self.rate = rpm / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = 0.0
        self.stamp = now

    def take(self, now: float) -> float:
        """Take one (0.0 returned) or say how many seconds until one fits (nothing taken)."""
        if now > self.stamp:
            self.level = max(0.0, self.level - (now - self.stamp) * self.rate)
            self.stamp = now
        if self.level + 1.0 <= self.capacity + 1e-9:
            self.level += 1.0
            return 0.0
        return (self.level + 1.0 - self.capacity) / self.rate


class StoredFile:
    """An uploaded file, or a batch's output or error file."""

    __slots__ = ("created", "data", "filename", "id", "purpose")

    def __init__(self, file_id: str, filename: str, purpose: str, data: bytes, created: float) -> None:
        self.id = file_id
        self.filename = filename
        self.purpose = purpose
        self.data = data
        self.created = created


class Batch:
    """One batch: what was asked, what its validation decided, and the instants of its timeline."""

    __slots__ = (
        "accepted",
        "cancel_t",
        "created",
        "cursor",
        "decided",
        "endpoint",
        "err",
        "error_file_id",
        "errors",
        "expires_t",
        "expiring",
        "failing",
        "filename",
        "final",
        "final_t",
        "id",
        "input",
        "input_file_id",
        "metadata",
        "model",
        "out",
        "outcome",
        "output_file_id",
        "seq",
        "spans",
        "t_end",
        "t_valid",
        "token",
        "tokens",
        "total",
        "usage",
    )

    def __init__(self, seq: int, endpoint: str, file: StoredFile, metadata: Any, created: float, cfg: Any) -> None:
        token = os.urandom(16).hex()
        self.id = "batch_" + token
        self.token = token[:24]
        self.seq = seq
        self.endpoint = endpoint
        self.input_file_id = file.id
        self.filename = file.filename
        self.input = file.data  # kept even if the file is deleted meanwhile
        self.metadata = metadata
        self.created = created
        self.t_valid = created + cfg.validate_seconds
        self.expires_t = created + cfg.window_seconds
        self.decided = False
        self.accepted = False
        self.errors: list[dict[str, Any]] | None = None
        self.model: str | None = None
        self.tokens = 0
        self.total = 0
        self.spans: list[tuple[int, int]] = []
        self.outcome = bytearray()
        self.failing: list[int] = []
        self.t_end = math.inf
        self.expiring = False
        self.cancel_t: float | None = None
        self.final: str | None = None
        self.final_t = 0.0
        self.output_file_id: str | None = None
        self.error_file_id: str | None = None
        self.usage = (0, 0)  # prompt and completion tokens of the lines answered so far
        self.cursor = 0  # lines answered so far (in `out` and `err`)
        self.out: list[bytes] = []
        self.err: list[bytes] = []

    def open_until(self, finalize: float) -> float:
        """Until when an accepted batch counts against the enqueued-token limit."""
        end = self.expires_t if self.expiring else self.t_end + finalize
        return end if self.cancel_t is None else min(end, self.cancel_t)


def _prompt_tokens(endpoint: str, body: dict[str, Any], embedding_dims: int) -> int:
    """Validate a line's body as the online route would; return its prompt tokens (InvalidRequest if bad)."""
    if endpoint == "/v1/chat/completions":
        rs.common(body, ("max_completion_tokens", "max_tokens"))
        return tk.message_tokens(rs.check_chat(body))
    if endpoint == "/v1/completions":
        rs.common(body, ("max_tokens",))
        return tk.input_items_tokens(rs.check_items(body, "prompt"))
    if endpoint == "/v1/responses":
        rs.common(body, ("max_output_tokens",))
        rs.check_responses_input(body)
        return tk.responses_tokens(body)
    rs.common(body, ())
    data = rs.check_items(body, "input")
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 4096):
        raise rs.InvalidRequest("Invalid 'dimensions': expected an integer in [1, 4096].", "dimensions")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise rs.InvalidRequest("Invalid 'encoding_format': expected 'float' or 'base64'.", "encoding_format")
    return tk.input_items_tokens(data)


def _embedding_inputs(body: dict[str, Any]) -> int:
    data = body.get("input")
    if isinstance(data, list) and data and not isinstance(data[0], int):
        return len(data)
    return 1


class BatchService:
    """The Files and Batches routes of one `SimulatorApp` (same event loop, same clock, same stats)."""

    def __init__(self, app: SimulatorApp) -> None:
        self.app = app
        self.sim = app.config
        self.config = app.config.batch
        self.clock = app.config.clock
        self.mono0 = self.clock()
        self.epoch0 = time.time()
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, Batch] = {}
        self.pending: list[Batch] = []  # not yet validated, by (t_valid, seq)
        self.active: list[Batch] = []  # not yet terminal
        self.enqueued: dict[str, list[Batch]] = {}  # accepted and possibly still open, per model
        self.seq = 0
        self.uploads = self.creates = 0  # well-formed uploads and creations, faulted or not
        cfg = self.config
        now = self.mono0
        self.upload_gate = _Gate(cfg.upload_rpm, now) if cfg.upload_rpm else None
        self.create_gate = _Gate(cfg.create_rpm, now) if cfg.create_rpm else None

    def unix(self, t: float) -> int:
        """Unix seconds of simulator-clock instant `t`."""
        return int(self.epoch0 + (t - self.mono0))

    # ---- routing -----------------------------------------------------------------------------

    def handle(
        self, method: bytes, path: bytes, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Answer:
        """Answer one request under /v1/files or /v1/batches."""
        self.app.stats.requests += 1
        denied = self._authorize(headers)
        if denied is not None:
            return denied
        now = self.clock()
        self.advance(now)
        parts = path.decode("latin-1").split("/")[2:]  # "", "v1" dropped
        params = parse_qs(query.decode("latin-1")) if query else {}
        verb = method.decode("latin-1")
        kind, n = parts[0], len(parts)
        routes: dict[str, Any] = {}
        if kind == "files":
            if n == 1:
                routes = {"POST": lambda: self._upload(headers, body, now), "GET": lambda: self._list_files(params)}
            elif n == 2:
                routes = {"GET": lambda: self._get_file(parts[1]), "DELETE": lambda: self._delete_file(parts[1])}
            elif n == 3 and parts[2] == "content":
                routes = {"GET": lambda: self._file_content(parts[1])}
        elif kind == "batches":
            if n == 1:
                routes = {"POST": lambda: self._create(body, now), "GET": lambda: self._list_batches(params, now)}
            elif n == 2:
                routes = {"GET": lambda: self._get_batch(parts[1], now)}
            elif n == 3 and parts[2] == "cancel":
                routes = {"POST": lambda: self._cancel(parts[1], now)}
        if not routes:
            return _error(404, f"Invalid URL ({verb} {path.decode('latin-1')})")
        run = routes.get(verb)
        if run is None:
            allow = ("allow: " + ", ".join(routes) + "\r\n").encode()
            return _error(405, f"Method {verb} not allowed on {path.decode('latin-1')}", headers=allow)
        return run()

    def _authorize(self, headers: list[tuple[bytes, bytes]]) -> Answer | None:
        expected = self.sim.api_key
        if expected is None:
            return None
        key = self.app._key(headers)
        if key == expected:
            return None
        if key is None:
            msg = (
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        else:
            msg = "Incorrect API key provided. The simulator expects its --api-key."
        return _error(401, msg, None, "invalid_api_key")

    @staticmethod
    def _fault(sequence: tuple[str, ...], n: int) -> str:
        """The fault of the n-th (from 0) well-formed upload or creation: "ok", "500", "drop" or "lost"."""
        return sequence[n] if n < len(sequence) else "ok"

    def _rate_limited(self, gate: _Gate | None, what: str, now: float) -> Answer | None:
        if gate is None:
            return None
        wait = gate.take(now)
        if wait <= 0:
            return None
        wait_ms = max(1, math.ceil(wait * 1000 - 1e-6))
        msg = (
            f"Rate limit reached for {what} in organization org-simulator on requests per min (RPM): "
            f"Limit {gate.rpm}. Please try again in {format_duration(wait_ms / 1000)}."
        )
        retry = f"retry-after: {max(1, math.ceil(wait_ms / 1000))}\r\nretry-after-ms: {wait_ms}\r\n".encode()
        return Answer(429, rs.error_body(msg, "requests", None, "rate_limit_exceeded"), retry)

    # ---- files -------------------------------------------------------------------------------

    def _file_obj(self, f: StoredFile) -> dict[str, Any]:
        return {
            "id": f.id,
            "object": "file",
            "bytes": len(f.data),
            "created_at": self.unix(f.created),
            "expires_at": None,
            "filename": f.filename,
            "purpose": f.purpose,
            "status": "processed",
            "status_details": None,
        }

    def _store(self, filename: str, purpose: str, data: bytes, created: float) -> StoredFile:
        f = StoredFile("file-" + os.urandom(11).hex(), filename, purpose, data, created)
        self.files[f.id] = f
        return f

    def _upload(self, headers: list[tuple[bytes, bytes]], body: bytes, now: float) -> Answer:
        stats = self.app.stats.batch
        limited = self._rate_limited(self.upload_gate, "file uploads", now)
        if limited is not None:
            stats.rate_limited_uploads += 1
            return limited
        reply = self._check_upload(headers, body)
        if isinstance(reply, Answer):
            stats.uploads_rejected += 1
            return reply
        fault = self._fault(self.config.upload_faults, self.uploads)
        self.uploads += 1
        if fault in ("500", "drop"):
            stats.upload_faults += 1
            return Answer(500, _FAULT_500) if fault == "500" else _DROPPED
        filename, purpose, data = reply
        f = self._store(filename, purpose, data, now)
        stats.files_uploaded += 1
        stats.bytes_uploaded += len(data)
        stats.uploads_by_filename[filename] = stats.uploads_by_filename.get(filename, 0) + 1
        if fault == "lost":
            return _DROPPED
        return _json(self._file_obj(f))

    def _check_upload(self, headers: list[tuple[bytes, bytes]], body: bytes) -> Answer | tuple[str, str, bytes]:
        ctype = next((v.decode("latin-1") for n, v in headers if n == b"content-type"), "")
        try:
            form = parse_form(ctype, body)
        except MultipartError as exc:
            return _error(400, f"Invalid multipart/form-data request: {exc}.")
        if "purpose" not in form:
            return _error(400, "Missing required parameter: 'purpose'.", "purpose", "missing_required_parameter")
        purpose = form["purpose"].data.decode("utf-8", "replace").strip()
        if purpose not in PURPOSES:
            allowed = ", ".join(f"'{p}'" for p in PURPOSES)
            return _error(400, f"Invalid value for 'purpose': '{purpose}'. Supported values are: {allowed}.",
                          "purpose", "invalid_value")
        part = form.get("file")
        if part is None or part.filename is None:
            return _error(400, "Missing required parameter: 'file'.", "file", "missing_required_parameter")
        filename = part.filename.replace("\\", "/").rsplit("/", 1)[-1] or "upload"
        data = part.data
        if purpose == "batch":
            if not filename.endswith(".jsonl"):
                return _error(400, "Invalid file format for Batch API. Must be .jsonl", "file", "invalid_file_format")
            limit = self.config.max_file_bytes
            if len(data) > limit:
                return _error(400, f"File is too large: {len(data)} bytes. Batch input files can be at most "
                              f"{limit} bytes.", "file", "file_too_large")
        return filename, purpose, data

    def _list_files(self, params: dict[str, list[str]]) -> Answer:
        limit = self._limit(params, 10_000, 10_000)
        if isinstance(limit, Answer):
            return limit
        order = params.get("order", ["desc"])[0]
        if order not in ("asc", "desc"):
            return _error(400, f"Invalid value for 'order': '{order}'. Supported values are: 'asc', 'desc'.",
                          "order", "invalid_value")
        purpose = params.get("purpose", [None])[0]
        items = [f for f in self.files.values() if purpose is None or f.purpose == purpose]
        if order == "desc":
            items.reverse()
        return self._page([self._file_obj(f) for f in items], params, limit)

    def _get_file(self, file_id: str) -> Answer:
        f = self.files.get(file_id)
        return _json(self._file_obj(f)) if f is not None else self._no_file(file_id)

    def _file_content(self, file_id: str) -> Answer:
        f = self.files.get(file_id)
        return Answer(200, f.data, b"", OCTET) if f is not None else self._no_file(file_id)

    def _delete_file(self, file_id: str) -> Answer:
        if self.files.pop(file_id, None) is None:
            return self._no_file(file_id)
        self.app.stats.batch.files_deleted += 1
        return _json({"id": file_id, "object": "file", "deleted": True})

    @staticmethod
    def _no_file(file_id: str) -> Answer:
        return _error(404, f"No such File object: {file_id}", "id")

    # ---- pagination --------------------------------------------------------------------------

    @staticmethod
    def _limit(params: dict[str, list[str]], default: int, maximum: int) -> int | Answer:
        raw = params.get("limit", [None])[0]
        if raw is None:
            return default
        try:
            limit = int(raw)
        except ValueError:
            return _error(400, f"Invalid 'limit': expected an integer, but got '{raw}' instead.", "limit",
                          "invalid_type")
        if not 1 <= limit <= maximum:
            return _error(400, f"Invalid 'limit': expected a value in [1, {maximum}], but got {limit} instead.",
                          "limit", "invalid_value")
        return limit

    @staticmethod
    def _page(items: list[dict[str, Any]], params: dict[str, list[str]], limit: int) -> Answer:
        after = params.get("after", [None])[0]
        if after is not None:
            index = next((i for i, item in enumerate(items) if item["id"] == after), None)
            items = [] if index is None else items[index + 1 :]
        page = items[:limit]
        return _json({
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        })

    # ---- batches: requests -------------------------------------------------------------------

    def _create(self, raw: bytes, now: float) -> Answer:
        stats = self.app.stats.batch
        limited = self._rate_limited(self.create_gate, "batch creation", now)
        if limited is not None:
            stats.rate_limited_creates += 1
            return limited
        reply = self._check_create(raw)
        if isinstance(reply, Answer):
            stats.creates_rejected += 1
            return reply
        fault = self._fault(self.config.create_faults, self.creates)
        self.creates += 1
        if fault in ("500", "drop"):
            stats.create_faults += 1
            return Answer(500, _FAULT_500) if fault == "500" else _DROPPED
        endpoint, f, metadata = reply
        self.seq += 1
        b = Batch(self.seq, endpoint, f, metadata, now, self.config)
        self.batches[b.id] = b
        bisect.insort(self.pending, b, key=lambda x: (x.t_valid, x.seq))
        self.active.append(b)
        stats.batches_created += 1
        stats.batches_by_filename[f.filename] = stats.batches_by_filename.get(f.filename, 0) + 1
        stats.batches_by_input_file[f.id] = stats.batches_by_input_file.get(f.id, 0) + 1
        self.advance(now)  # a batch with validate_seconds=0 is validated at once
        if fault == "lost":
            return _DROPPED
        return _json(self._batch_obj(b, now))

    def _check_create(self, raw: bytes) -> Answer | tuple[str, StoredFile, Any]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request. The OpenAI API expects a JSON "
                          "payload.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if body.get(name) is None:
                return _error(400, f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
            if not isinstance(body[name], str):
                return _error(400, f"Invalid type for '{name}': expected a string.", name, "invalid_type")
        endpoint = body["endpoint"]
        if endpoint not in ENDPOINTS:
            allowed = ", ".join(f"'{e}'" for e in ENDPOINTS)
            return _error(400, f"Invalid value: '{endpoint}'. Supported values are: {allowed}.", "endpoint",
                          "invalid_value")
        window = body["completion_window"]
        if window != "24h":
            return _error(400, f"Invalid value: '{window}'. Supported values are: '24h'.", "completion_window",
                          "invalid_value")
        metadata = body.get("metadata")
        problem = _metadata_problem(metadata)
        if problem is not None:
            return _error(400, problem, "metadata", "invalid_value")
        f = self.files.get(body["input_file_id"])
        if f is None:
            return _error(400, f"Could not find the input file: {body['input_file_id']}.", "input_file_id",
                          "invalid_value")
        if f.purpose != "batch":
            return _error(400, f"The input file {f.id} was not uploaded with purpose 'batch'.", "input_file_id",
                          "invalid_value")
        return endpoint, f, metadata

    def _get_batch(self, batch_id: str, now: float) -> Answer:
        b = self.batches.get(batch_id)
        return _json(self._batch_obj(b, now)) if b is not None else self._no_batch(batch_id)

    def _list_batches(self, params: dict[str, list[str]], now: float) -> Answer:
        limit = self._limit(params, 20, 100)
        if isinstance(limit, Answer):
            return limit
        newest_first = list(reversed(self.batches.values()))
        after = params.get("after", [None])[0]
        if after is not None:  # render only what the page needs
            index = next((i for i, b in enumerate(newest_first) if b.id == after), None)
            newest_first = [] if index is None else newest_first[index + 1 :]
        page = newest_first[: limit + 1]
        items = [self._batch_obj(b, now) for b in page]
        return self._page(items, {}, limit)

    def _cancel(self, batch_id: str, now: float) -> Answer:
        b = self.batches.get(batch_id)
        if b is None:
            return self._no_batch(batch_id)
        status, _done = self.phase(b, now)
        if status in ("cancelling", "cancelled"):
            return _json(self._batch_obj(b, now))
        if status not in OPEN:
            return _error(409, f"Cannot cancel a batch with status '{status}'.")
        b.cancel_t = now
        if not b.decided:  # cancelled while validating: never validated
            b.decided = True
            self.pending.remove(b)
        self.app.stats.batch.cancels += 1
        return _json(self._batch_obj(b, now))

    @staticmethod
    def _no_batch(batch_id: str) -> Answer:
        return _error(404, f"No batch found with id '{batch_id}'.", "batch_id")

    # ---- batches: the clock-driven state machine ---------------------------------------------

    def advance(self, now: float) -> None:
        """Validate every batch whose validation ended by `now` (in that order), then finish the terminal ones."""
        pending = self.pending
        while pending and pending[0].t_valid <= now:
            self._decide(pending.pop(0))
        if self.active:
            still: list[Batch] = []
            for b in self.active:
                if b.decided:
                    status, done = self.phase(b, now)
                    if done > b.cursor and status not in TERMINAL:
                        self._produce(b, done)
                    if status in TERMINAL:
                        self._finish(b, status, done)
                        continue
                still.append(b)
            self.active = still

    def phase(self, b: Batch, t: float) -> tuple[str, int]:
        """(status, lines done) of `b` at instant `t` (validations due by `t` already decided)."""
        cfg = self.config
        if b.cancel_t is not None and t >= b.cancel_t:
            status = "cancelling" if t < b.cancel_t + cfg.cancel_seconds else "cancelled"
            return status, self._done(b, b.cancel_t)
        if t < b.t_valid or not b.decided:
            return "validating", 0
        if not b.accepted:
            return "failed", 0
        if b.expiring:
            if t < b.expires_t:
                return "in_progress", self._done(b, t)
            return "expired", self._done(b, b.expires_t)
        if t < b.t_end:
            return "in_progress", self._done(b, t)
        if t < b.t_end + cfg.finalize_seconds:
            return "finalizing", b.total
        return "completed", b.total

    def _done(self, b: Batch, t: float) -> int:
        if not b.accepted or t <= b.t_valid:
            return 0
        return min(b.total, int((t - b.t_valid) * self.config.lines_per_second + 1e-9))

    def _decide(self, b: Batch) -> None:
        """The end of `b`'s validation: its lines, then the enqueued-token limit of its model."""
        b.decided = True
        errors = self._validate(b)
        if errors:
            b.errors = errors
            return
        cfg = self.config
        model = b.model or ""
        limit = cfg.enqueued_limit(model)
        if limit is not None:
            t = b.t_valid
            queue = [o for o in self.enqueued.get(model, []) if o.open_until(cfg.finalize_seconds) > t]
            self.enqueued[model] = queue
            used = sum(o.tokens for o in queue if self.phase(o, t)[0] in OPEN)
            if used + b.tokens > limit:
                b.errors = [_line_error(
                    "token_limit_exceeded",
                    f"Enqueued token limit reached for {model} in organization org-simulator. Limit: {limit:,} "
                    "enqueued tokens. Please try again once some in_progress batches have been completed.",
                    None,
                )]
                b.total = 0
                return
        b.accepted = True
        rate = cfg.lines_per_second
        b.t_end = b.t_valid + b.total / rate
        b.expiring = int((b.expires_t - b.t_valid) * rate + 1e-9) < b.total
        self.enqueued.setdefault(model, []).append(b)

    def _validate(self, b: Batch) -> list[dict[str, Any]]:
        """Check every line of `b`'s input; on success fill model, tokens, spans and line outcomes."""
        cfg = self.config
        data = b.input
        endpoint = b.endpoint
        dims = self.sim.embedding_dims
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        spans: list[tuple[int, int]] = []
        outcome = bytearray()
        model: str | None = None
        tokens = inputs = count = 0
        pos, size, lineno = 0, len(data), 0
        while pos < size:
            nl = data.find(b"\n", pos)
            end = size if nl < 0 else nl
            start, pos = pos, end + 1
            lineno += 1
            raw = data[start:end]
            if not raw.strip():
                continue
            count += 1
            if count > cfg.max_requests_per_file:
                continue
            problem = self._check_line(raw, lineno, endpoint, model, seen)
            if isinstance(problem, dict):
                errors.append(problem)
                continue
            body, line_model = problem
            if model is None:
                model = line_model
            spans.append((start, end))
            try:
                tokens += _prompt_tokens(endpoint, body, dims)
                outcome.append(OK)
            except rs.InvalidRequest:
                outcome.append(INVALID)
            if endpoint == "/v1/embeddings":
                inputs += _embedding_inputs(body)
        if count == 0:
            return [_line_error("empty_file", "The batch input file is empty. Please ensure that the batch "
                                "contains at least one request.", None)]
        if count > cfg.max_requests_per_file:
            return [_line_error("too_many_tasks", f"The batch input file has {count:,} requests, more than the "
                                f"maximum of {cfg.max_requests_per_file:,} requests per batch.", None)]
        if inputs > cfg.max_embedding_inputs:
            return [_line_error("too_many_tasks", f"The batch has {inputs:,} embedding inputs, more than the "
                                f"maximum of {cfg.max_embedding_inputs:,} embedding inputs per batch.", None)]
        if errors:
            return errors[:MAX_REPORTED_ERRORS]
        seed = self.sim.seed
        for i in range(len(outcome)):
            if outcome[i] == OK and (cfg.fail_all or (cfg.failure_rate and _draw(seed, b.seq, i) < cfg.failure_rate)):
                outcome[i] = SERVER_ERROR
        b.model = model
        b.tokens = tokens
        b.spans = spans
        b.outcome = outcome
        b.total = len(spans)
        b.failing = [i for i, kind in enumerate(outcome) if kind != OK]
        return []

    @staticmethod
    def _check_line(
        raw: bytes, lineno: int, endpoint: str, model: str | None, seen: set[str]
    ) -> dict[str, Any] | tuple[dict[str, Any], str]:
        """A line error, or (body, model) for a well-formed request line."""
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            line = None
        if not isinstance(line, dict):
            return _line_error("invalid_json_line", "This line is not parseable as valid JSON.", lineno)
        for name in ("custom_id", "method", "url", "body"):
            if line.get(name) is None:
                return _line_error("missing_required_parameter", f"Missing required parameter: '{name}'.", lineno,
                                   name)
        custom_id = line["custom_id"]
        if not isinstance(custom_id, str):
            return _line_error("invalid_type", "Invalid type for 'custom_id': expected a string.", lineno,
                               "custom_id")
        if line["method"] != "POST":
            return _line_error("invalid_method", "Invalid value for 'method': only 'POST' is supported.", lineno,
                               "method")
        if line["url"] != endpoint:
            return _line_error("invalid_url", "The URL provided for this request does not prefix-match the batch "
                               "endpoint.", lineno, "url")
        body = line["body"]
        if not isinstance(body, dict):
            return _line_error("invalid_type", "Invalid type for 'body': expected an object.", lineno, "body")
        line_model = body.get("model")
        if not isinstance(line_model, str):
            return _line_error("missing_required_parameter", "Missing required parameter: 'body.model'.", lineno,
                               "body.model")
        if model is not None and line_model != model:
            return _line_error("mismatched_model", f"The model '{line_model}' for this request does not match "
                               "the rest of the batch. Each batch must contain requests for a single model.",
                               lineno, "body.model")
        if custom_id in seen:
            return _line_error("duplicate_custom_id", f"The custom_id '{custom_id}' for this request is a "
                               "duplicate of another request. The custom_id parameter must be unique for each "
                               "request in a batch.", lineno, "custom_id")
        seen.add(custom_id)
        return body, line_model

    def _produce(self, b: Batch, upto: int) -> None:
        """Answer `b`'s lines up to `upto` (file order), so that the work is spread over the polls."""
        data, rate, dims = b.input, self.config.lines_per_second, self.sim.embedding_dims
        prompt_sum, completion_sum = b.usage
        out, err = b.out, b.err
        for i in range(b.cursor, upto):
            start, end = b.spans[i]
            line = orjson.loads(data[start:end])
            rid = f"{b.token}{i:08x}"
            head = {"id": "batch_req_" + rid, "custom_id": line["custom_id"]}
            kind = b.outcome[i]
            if kind == OK:
                created = self.unix(b.t_valid + (i + 1) / rate)
                payload, prompt, completion = self._answer(b.endpoint, line["body"], rid, created)
                prompt_sum += prompt
                completion_sum += completion
                response = {"status_code": 200, "request_id": "req_" + rid, "body": payload}
                out.append(orjson.dumps({**head, "response": response, "error": None}))
                continue
            if kind == SERVER_ERROR:
                response = {"status_code": 500, "request_id": "req_" + rid, "body": _SERVER_ERROR_BODY}
            else:
                try:
                    _prompt_tokens(b.endpoint, line["body"], dims)
                    message, param, code = "Invalid request.", None, None
                except rs.InvalidRequest as exc:
                    message, param, code = exc.message, exc.param, exc.code
                error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
                response = {"status_code": 400, "request_id": "req_" + rid, "body": {"error": error}}
            err.append(orjson.dumps({**head, "response": response, "error": None}))
        b.cursor = max(b.cursor, upto)
        b.usage = (prompt_sum, completion_sum)

    def _finish(self, b: Batch, status: str, done: int) -> None:
        """`b` reached a terminal status: write its output and error files, count it."""
        cfg = self.config
        stats = self.app.stats.batch
        b.final = status
        stats.final[status] = stats.final.get(status, 0) + 1
        if status == "failed":
            b.final_t = b.t_valid
            b.input = b""
            return
        if status == "cancelled":
            assert b.cancel_t is not None
            b.final_t = b.cancel_t + cfg.cancel_seconds
        elif status == "expired":
            b.final_t = b.expires_t
        else:
            b.final_t = b.t_end + cfg.finalize_seconds
        self._produce(b, done)
        out, err = b.out, b.err
        if status in _NOT_RUN:
            not_run = _NOT_RUN[status]
            for i in range(done, b.total):
                start, end = b.spans[i]
                head = {"id": f"batch_req_{b.token}{i:08x}", "custom_id": orjson.loads(b.input[start:end])["custom_id"]}
                err.append(orjson.dumps({**head, "response": None, "error": not_run}))
        if out:
            name = f"batch_{b.id[len('batch_') :]}_output.jsonl"
            b.output_file_id = self._store(name, "batch_output", b"\n".join(out) + b"\n", b.final_t).id
        if err:
            name = f"batch_{b.id[len('batch_') :]}_error.jsonl"
            b.error_file_id = self._store(name, "batch_output", b"\n".join(err) + b"\n", b.final_t).id
        b.out, b.err, b.spans, b.input = [], [], [], b""  # the files hold the results now
        failed_done = bisect.bisect_left(b.failing, done)
        stats.lines_completed += done - failed_done
        stats.lines_failed += failed_done
        if status == "expired":
            stats.lines_expired += b.total - done
        elif status == "cancelled":
            stats.lines_cancelled += b.total - done
        stats.prompt_tokens += b.usage[0]
        stats.completion_tokens += b.usage[1]

    def _answer(self, endpoint: str, body: dict[str, Any], rid: str, created: int) -> tuple[dict[str, Any], int, int]:
        """The 200 body of one line, as the online route builds it: (payload, prompt, completion tokens)."""
        sim = self.sim
        if endpoint == "/v1/embeddings":
            model, _cap, _n = rs.common(body, ())
            data = rs.check_items(body, "input")
            prompt = tk.input_items_tokens(data)
            dims = body.get("dimensions") or sim.embedding_dims
            base64 = body.get("encoding_format") == "base64"
            return rs.embeddings_body(sim.seed, model, data, dims, prompt, base64), prompt, 0
        if endpoint == "/v1/chat/completions":
            model, cap, n = rs.common(body, ("max_completion_tokens", "max_tokens"))
            cap = cap or sim.default_max_tokens
            prompt = tk.message_tokens(rs.check_chat(body))
            h = tk.body_hash(sim.seed, body)
            counts = [tk.choice_tokens(h, i, sim.answer_tokens, cap) for i in range(n)]
            return rs.chat_body(rid, created, model, counts, cap, prompt), prompt, sum(counts)
        if endpoint == "/v1/completions":
            model, cap, n = rs.common(body, ("max_tokens",))
            prompt_data = rs.check_items(body, "prompt")
            cap = cap or sim.default_max_tokens
            prompt = tk.input_items_tokens(prompt_data)
            prompts = 1 if isinstance(prompt_data, str) or isinstance(prompt_data[0], int) else len(prompt_data)
            h = tk.body_hash(sim.seed, body)
            counts = [tk.choice_tokens(h, i, sim.answer_tokens, cap) for i in range(n * prompts)]
            return rs.completion_body(rid, created, model, counts, cap, prompt), prompt, sum(counts)
        model, cap, _n = rs.common(body, ("max_output_tokens",))
        rs.check_responses_input(body)
        cap = cap or sim.default_max_tokens
        prompt = tk.responses_tokens(body)
        count = tk.choice_tokens(tk.body_hash(sim.seed, body), 0, sim.answer_tokens, cap)
        return rs.responses_body(rid, created, model, count, cap, prompt), prompt, count

    def _batch_obj(self, b: Batch, now: float) -> dict[str, Any]:
        """The batch object as OpenAI renders it, at instant `now`."""
        cfg = self.config
        status, done = self.phase(b, now)
        failed = bisect.bisect_left(b.failing, done)
        completed = done - failed
        if status in ("expired", "cancelled"):
            failed += b.total - done
        unix = self.unix
        started = b.accepted and b.t_valid <= now and (b.cancel_t is None or b.cancel_t >= b.t_valid)
        finalizing = (b.accepted and not b.expiring and b.t_end <= now
                      and (b.cancel_t is None or b.cancel_t >= b.t_end))
        prompt, completion = b.usage
        cancelled_at = None
        if status == "cancelled" and b.cancel_t is not None:
            cancelled_at = unix(b.cancel_t + cfg.cancel_seconds)
        return {
            "id": b.id,
            "object": "batch",
            "endpoint": b.endpoint,
            "model": b.model,
            "errors": {"object": "list", "data": b.errors} if status == "failed" else None,
            "input_file_id": b.input_file_id,
            "completion_window": "24h",
            "status": status,
            "output_file_id": b.output_file_id,
            "error_file_id": b.error_file_id,
            "created_at": unix(b.created),
            "in_progress_at": unix(b.t_valid) if started else None,
            "expires_at": unix(b.expires_t),
            "finalizing_at": unix(b.t_end) if finalizing else None,
            "completed_at": unix(b.t_end + cfg.finalize_seconds) if status == "completed" else None,
            "failed_at": unix(b.t_valid) if status == "failed" else None,
            "expired_at": unix(b.expires_t) if status == "expired" else None,
            "cancelling_at": unix(b.cancel_t) if b.cancel_t is not None else None,
            "cancelled_at": cancelled_at,
            "request_counts": {"total": b.total, "completed": completed, "failed": failed},
            "usage": {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": completion,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + completion,
            },
            "metadata": b.metadata,
        }


def _draw(seed: int, seq: int, index: int) -> float:
    """A uniform number in [0, 1) from (seed, batch number, line index)."""
    digest = hashlib.blake2b(b"batchline:%d:%d:%d" % (seed, seq, index), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def _metadata_problem(metadata: Any) -> str | None:
    """Why `metadata` is not OpenAI's (at most 16 string pairs, keys ≤ 64, values ≤ 512 chars), or None."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return "Invalid type for 'metadata': expected an object."
    if len(metadata) > 16:
        return f"Invalid 'metadata': at most 16 keys, got {len(metadata)}."
    for key, value in metadata.items():
        if len(key) > 64:
            return f"Invalid 'metadata': key '{key[:70]}' is longer than 64 characters."
        if not isinstance(value, str):
            return f"Invalid type for 'metadata.{key}': expected a string."
        if len(value) > 512:
            return f"Invalid 'metadata.{key}': longer than 512 characters."
    return None
