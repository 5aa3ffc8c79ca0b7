"""The result line: what became of one request, encoded as an OpenAI Batch API output line plus batchchat's
own fields (`usage`, `cost_usd`, `attempts`, `latency_ms`, `line`, `metadata`), which Batch consumers ignore;
and reading an output back."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

_ERROR_BODY_LIMIT = 4096


@dataclass(slots=True)
class Result:
    """What became of one request: the answer (if any), the error (if it failed), and how it went."""

    custom_id: str
    line_no: int
    status: int | None = None
    raw_body: bytes | None = None
    request_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    attempts: int = 0
    latency: float = 0.0
    usage: dict[str, Any] | None = None
    metadata: Any = None
    cost_usd: float | None = None  # the answer's cost at the run's prices (None: no usage, or price unknown)
    holds_slot: bool = False  # a concurrency slot is freed once this result is written
    fingerprint: str | None = None  # of the request answered (see `request_fingerprint`)
    line_hash: int = 0  # of the input line it answered, with the run's defaults (see `line_hasher`; 0: none)
    cached: bool = False  # written from the request cache (--cache), not sent
    ok: bool = field(init=False)

    def __post_init__(self) -> None:
        self.ok = self.error_code is None


def request_fingerprint(url: str, body: dict[str, Any]) -> str:
    """A short hash (16 hex digits) of a request as sent: its endpoint and its body after defaults are applied.

    Written in each result line, so that a resume can tell a done id whose request has since changed.
    """
    canonical = url.encode() + b"\n" + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=8).hexdigest()


LINE_HASH_VERSION = b"batchchat line hash 1"  # a new version when the same line and defaults may make another body


def line_hasher(defaults: object) -> Callable[[bytes], int]:
    """A 64-bit hash of an input line's bytes as read (no line ending), keyed by the run's defaults.

    Written in each answer's line beside its fingerprint: a resume that finds the same line under the same
    defaults knows the request is unchanged without parsing the line (the fingerprint is what is compared when
    the line differs: an edit that leaves the request as it was is no change). `defaults` is the run's
    `JobDefaults`, whose repr names every field that can change a body.
    """
    key = hashlib.blake2b(LINE_HASH_VERSION + repr(defaults).encode(), digest_size=32).digest()
    keyed = hashlib.blake2b(digest_size=8, key=key)
    from_bytes = int.from_bytes

    def line_hash(raw: bytes) -> int:
        h = keyed.copy()
        h.update(raw)
        return from_bytes(h.digest()) or 1  # 0 means "none"

    return line_hash


def _embed_body(raw: bytes, ok: bool) -> Any:
    """The response body as a JSON value for the output line, without re-encoding it when possible."""
    if ok and b"\n" not in raw:
        return orjson.Fragment(raw)  # already parsed once, so valid JSON: copied as is
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:_ERROR_BODY_LIMIT].decode("utf-8", "replace")


def encode_result(result: Result, line_id: str) -> bytes:
    """One output line, newline included."""
    response = None
    if result.status is not None:
        response = {
            "status_code": result.status,
            "request_id": result.request_id,
            "body": _embed_body(result.raw_body, result.ok) if result.raw_body is not None else None,
        }
    error = None if result.ok else {"code": result.error_code, "message": result.error_message}
    # custom_id, error and fingerprint come first, so that a resume reads them without parsing the whole line
    line: dict[str, Any] = {
        "id": line_id,
        "custom_id": result.custom_id,
        "error": error,
    }
    if result.fingerprint is not None:  # after the head, which a resume reads by a regular expression
        line["fingerprint"] = result.fingerprint
        if result.line_hash:
            line["line_hash"] = f"{result.line_hash:016x}"
    line |= {
        "response": response,
        "usage": result.usage,
        "cost_usd": result.cost_usd,
        "attempts": result.attempts,
        "latency_ms": round(result.latency * 1000.0, 1),
        "line": result.line_no,
    }
    if result.cached:
        line["cached"] = True
    if result.metadata is not None:
        line["metadata"] = result.metadata
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def iter_results(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the result lines of an output file as dicts (a torn last line is skipped)."""
    with Path(path).open("rb") as handle:
        for raw in handle:
            if raw.endswith(b"\n"):
                yield orjson.loads(raw)


