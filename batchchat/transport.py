"""The one HTTP client, and one attempt at one request turned into an outcome.

Outcomes are types, not flags (as httpx's exceptions are): `Success`, `Retryable` (why, and how long the
server asked us to wait), `Failed` (this request will not succeed), `Fatal` (no request will: bad key).
The client keeps httpx's API on the fastest transport measured here (httpx-aiohttp's `AiohttpTransport`);
`transport="httpx"` selects httpx's own, and tests plug respx in through `httpx.AsyncClient` as usual.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from batchchat.secrets import Redactor, Secret

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
        """The absolute URL of an endpoint path such as `/v1/chat/completions`."""
        base = self.base_url.rstrip("/")
        if base.endswith("/v1") and path.startswith("/v1/"):
            path = path[3:]
        return base + path


@dataclass(slots=True)
class Success:
    """A 2xx answer with a JSON body."""

    status: int
    body: dict[str, Any]
    raw: bytes
    request_id: str | None
    headers: httpx.Headers


@dataclass(slots=True)
class Retryable:
    """A transient failure: 429, 5xx, timeout, dropped connection, broken body."""

    reason: str
    message: str
    status: int | None = None
    retry_after: float | None = None
    raw: bytes | None = None
    request_id: str | None = None
    headers: httpx.Headers | None = None


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


def build_client(endpoint: EndpointConfig, concurrency: int) -> httpx.AsyncClient:
    """One `httpx.AsyncClient`, pool sized to `concurrency`, keep-alive on, auth and extra headers set."""
    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=30.0
    )
    timeout = httpx.Timeout(endpoint.read_timeout, connect=endpoint.connect_timeout, pool=None)
    headers = {"content-type": "application/json", "user-agent": "batchchat"}
    if endpoint.api_key:
        if endpoint.azure_api_version:
            headers["api-key"] = endpoint.api_key.reveal()
        else:
            headers["authorization"] = f"Bearer {endpoint.api_key.reveal()}"
    headers.update(dict(endpoint.extra_headers))
    params = {"api-version": endpoint.azure_api_version} if endpoint.azure_api_version else None
    transport: httpx.AsyncBaseTransport | None = None
    if endpoint.transport == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=limits)
    client = httpx.AsyncClient(
        headers=headers, params=params, timeout=timeout, limits=limits, transport=transport
    )
    client._cookies = _Cookies()  # the same empty jar; the setter would copy it into a plain httpx.Cookies
    return client


class _Cookies(httpx.Cookies):
    """httpx's cookie jar, minus the ~25 µs it spends per response building urllib shims when no cookie is set."""

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:  # the only headers CookieJar reads
            super().extract_cookies(response)


class Sender:
    """Sends one attempt and classifies what came back; never raises for HTTP or network trouble."""

    __slots__ = ("_client", "_endpoint", "_redact", "_urls")

    def __init__(self, client: httpx.AsyncClient, endpoint: EndpointConfig, redactor: Redactor) -> None:
        self._client = client
        self._endpoint = endpoint
        self._redact = redactor
        self._urls: dict[str, httpx.URL] = {}  # parsed once: httpx parses a str URL twice per request (~35 µs)

    async def send(self, path: str, content: bytes) -> Outcome:
        """POST `content` to the endpoint `path` and classify the answer."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self._endpoint.url_for(path))
        try:
            response = await self._client.post(url, content=content)
        except httpx.TimeoutException as exc:
            cause = exc.__cause__
            if type(cause).__module__.startswith("aiohttp") and not isinstance(cause, TimeoutError):
                # httpx-aiohttp maps every aiohttp connection error (a dropped connection too) to
                # ConnectTimeout: name what happened instead
                return Retryable("connection", self._redact.text(f"{type(cause).__name__}: {cause}".rstrip(": ")))
            return Retryable("timeout", self._redact.text(f"{type(exc).__name__}: {exc}".rstrip(": ")))
        except httpx.TransportError as exc:
            return Retryable("connection", self._redact.text(f"{type(exc).__name__}: {exc}".rstrip(": ")))
        return classify(response, self._redact, self._endpoint)


def classify(response: httpx.Response, redact: Redactor, endpoint: EndpointConfig) -> Outcome:
    """Turn an HTTP response into an outcome (see DESIGN.md: what retries, what fails, what stops)."""
    status = response.status_code
    raw = redact.data(response.content)
    headers = response.headers
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


def retry_after(headers: httpx.Headers) -> float | None:
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
