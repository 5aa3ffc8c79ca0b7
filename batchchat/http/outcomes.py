"""One attempt at one request turned into an outcome, whichever HTTP client sent it.

Outcomes are types, not flags (as httpx's exceptions are): `Success`, `Retryable` (why, and how long the
server asked us to wait), `Failed` (this request will not succeed), `Fatal` (no request will: bad key).
Both senders classify answers with `classify`, so the run sees the same outcomes from either.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from batchchat.config.settings import EndpointConfig
from batchchat.secrets import Redactor

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
FATAL_STATUSES = frozenset({401, 403})


@dataclass(slots=True)
class Success:
    """A 2xx answer with a JSON body."""

    status: int
    body: dict[str, Any]
    raw: bytes
    request_id: str | None
    headers: Mapping[str, str]


@dataclass(slots=True)
class Retryable:
    """A transient failure: 429, 5xx, timeout, dropped connection, broken body."""

    reason: str
    message: str
    status: int | None = None
    retry_after: float | None = None
    raw: bytes | None = None
    request_id: str | None = None
    headers: Mapping[str, str] | None = None


@dataclass(slots=True)
class Failed:
    """A final answer for this request alone (400, 404, 413, 422, ...)."""

    reason: str
    message: str
    status: int | None = None
    raw: bytes | None = None
    request_id: str | None = None


@dataclass(slots=True)
class Fatal:
    """The endpoint refuses every request (401, 403): the run must stop."""

    reason: str
    message: str
    status: int | None = None


Outcome = Success | Retryable | Failed | Fatal


def classify(status: int, raw: bytes, headers: Mapping[str, str], redact: Redactor,
             endpoint: EndpointConfig) -> Outcome:
    """Turn an HTTP answer into an outcome (see DESIGN.md: what retries, what fails, what stops)."""
    raw = redact.data(raw)
    request_id = headers.get("x-request-id")
    should_retry = headers.get("x-should-retry")
    if 200 <= status < 300:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return Retryable("invalid_json", f"HTTP {status} with a body that is not JSON", status, None, raw,
                             request_id, headers)
        if not isinstance(body, dict):
            return Retryable("invalid_json", f"HTTP {status} with a JSON body that is not an object", status,
                             None, raw, request_id, headers)
        return Success(status, body, raw, request_id, headers)
    message = f"HTTP {status}: {_error_message(raw)}"
    if status in FATAL_STATUSES:
        where = endpoint.api_key_env if endpoint.api_key else f"{endpoint.api_key_env} (not set)"
        verb = "rejected the API key" if status == 401 else "refused access with the API key"
        return Fatal(f"http_{status}", f"{endpoint.base_url} {verb} from {where}: {message}", status)
    if should_retry == "true" or (should_retry != "false" and (status in RETRY_STATUSES or status >= 500)):
        reason = "rate_limited" if status == 429 else f"http_{status}"
        return Retryable(reason, message, status, retry_after(headers), raw, request_id, headers)
    return Failed(f"http_{status}", message, status, raw, request_id)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, or `Retry-After` as seconds or an HTTP date, or
    LiteLLM's `llm_provider-retry-after` (seconds) when it sends no plain one."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after") or headers.get("llm_provider-retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _error_message(raw: bytes) -> str:
    """The `error.message` of an OpenAI-shaped error body, or the start of the body."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw[:200].decode("utf-8", "replace").strip()
        return text or "(empty body)"
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
    return raw[:200].decode("utf-8", "replace")
