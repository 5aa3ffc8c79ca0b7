"""One attempt at one request turned into an outcome, whichever HTTP client sent it.

Outcomes are types, not flags (as httpx's exceptions are): `Success`, `Retryable` (why, and how long the
server asked us to wait), `Failed` (this request will not succeed), `Fatal` (no request will: bad key).
`open_sender` picks the client: aiohttp driven directly by default (`aiohttp_sender`, the fastest Python
client measured here), or httpx (`httpx_sender`: `transport="httpx"`, or an `httpx.AsyncClient` handed in,
as respx is in tests). Both classify answers here, so the engine sees the same outcomes from either.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import orjson

from batchchat.secrets import Redactor, Secret

if TYPE_CHECKING:
    import httpx

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
FATAL_STATUSES = frozenset({401, 403})


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """Where requests go and how they authenticate."""

    base_url: str = "https://api.openai.com/v1"
    api_key: Secret | None = None
    api_key_env: str = "OPENAI_API_KEY"
    azure_api_version: str | None = None  # set: Azure's `api-key` header and `?api-version=`
    extra_headers: tuple[tuple[str, str], ...] = ()
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    transport: str = "aiohttp"  # or "httpx"

    def url_for(self, path: str) -> str:
        """The absolute URL of an endpoint path such as `/v1/chat/completions`, Azure's api-version included."""
        base = self.base_url.rstrip("/")
        if not self.azure_api_version:
            return base + (path[3:] if base.endswith("/v1") and path.startswith("/v1/") else path)
        # Azure's deployment URLs (.../openai/deployments/NAME) take the path without the /v1
        path = path[3:] if path.startswith("/v1/") else path
        return f"{base}{path}?api-version={quote(self.azure_api_version, safe='')}"


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


def request_headers(endpoint: EndpointConfig) -> dict[str, str]:
    """The headers every request carries: JSON, our user agent, the key (Azure's way or OpenAI's), extras."""
    headers = {"content-type": "application/json", "user-agent": "batchchat"}
    if endpoint.api_key:
        if endpoint.azure_api_version:
            headers["api-key"] = endpoint.api_key.reveal()
        else:
            headers["authorization"] = f"Bearer {endpoint.api_key.reveal()}"
    headers.update(dict(endpoint.extra_headers))
    return headers


class Sender(Protocol):
    """Sends one attempt and classifies what came back; never raises for HTTP or network trouble."""

    async def send(self, path: str, content: bytes) -> Outcome:
        """POST `content` to the endpoint `path` and classify the answer."""
        ...

    async def aclose(self) -> None:
        """Close the connections this sender opened (not those of a client it was given)."""
        ...


def open_sender(endpoint: EndpointConfig, concurrency: int, redactor: Redactor,
                client: httpx.AsyncClient | None = None) -> Sender:
    """The sender for a run: the given httpx client, httpx's own transport, or aiohttp (the default).

    Call it from a running event loop (aiohttp binds its session to the loop).
    """
    if client is not None or endpoint.transport == "httpx":
        from batchchat.httpx_sender import HttpxSender, build_client

        if client is not None:
            return HttpxSender(client, endpoint, redactor, owns_client=False)
        return HttpxSender(build_client(endpoint, concurrency), endpoint, redactor, owns_client=True)
    from batchchat.aiohttp_sender import AiohttpSender

    return AiohttpSender(endpoint, concurrency, redactor)


def timeout_message(connect: bool, endpoint: EndpointConfig) -> str:
    """The same words for a timeout whichever client timed out."""
    if connect:
        return f"timeout: could not connect within {endpoint.connect_timeout:g} s"
    return f"timeout: no answer within {endpoint.read_timeout:g} s"


def describe(exc: BaseException) -> str:
    """An exception as `Type: message`, for an outcome's message."""
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


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
    """Seconds the server asked us to wait: `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
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
