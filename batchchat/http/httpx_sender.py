"""A sender on httpx: `--transport httpx`, or an `httpx.AsyncClient` handed in (respx in tests, custom transports)."""

from __future__ import annotations

import httpx

from batchchat.config.settings import EndpointConfig
from batchchat.http.outcomes import Outcome, Retryable, classify
from batchchat.http.request import describe, request_headers, timeout_message
from batchchat.secrets import Redactor


def build_client(endpoint: EndpointConfig, concurrency: int) -> httpx.AsyncClient:
    """One `httpx.AsyncClient` on httpx's own transport, pool sized to `concurrency`, headers set."""
    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=30.0
    )
    timeout = httpx.Timeout(endpoint.read_timeout, connect=endpoint.connect_timeout, pool=None)
    client = httpx.AsyncClient(headers=request_headers(endpoint), timeout=timeout, limits=limits)
    client._cookies = _Cookies()  # the same empty jar; the setter would copy it into a plain httpx.Cookies
    return client


class _Cookies(httpx.Cookies):
    """httpx's cookie jar, minus the ~25 µs it spends per response building urllib shims when no cookie is set."""

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:  # the only headers CookieJar reads
            super().extract_cookies(response)


class HttpxSender:
    """A `Sender` on an `httpx.AsyncClient`: the one to inject for tests (respx) or custom transports."""

    __slots__ = ("_client", "_endpoint", "_owns_client", "_redact", "_urls")

    def __init__(self, client: httpx.AsyncClient, endpoint: EndpointConfig, redactor: Redactor,
                 owns_client: bool = False) -> None:
        self._client = client
        self._endpoint = endpoint
        self._redact = redactor
        self._owns_client = owns_client
        self._urls: dict[str, httpx.URL] = {}  # parsed once: httpx parses a str URL twice per request (~35 µs)

    async def send(self, path: str, content: bytes) -> Outcome:
        """POST `content` to the endpoint `path` and classify the answer."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self._endpoint.url_for(path))
        try:
            response = await self._client.post(url, content=content)
        except httpx.TimeoutException as exc:
            return Retryable("timeout", timeout_message(isinstance(exc, httpx.ConnectTimeout), self._endpoint))
        except httpx.TransportError as exc:
            return Retryable("connection", self._redact.text(describe(exc)))
        return classify(response.status_code, response.content, response.headers, self._redact, self._endpoint)

    async def aclose(self) -> None:
        """Close the client if this sender built it."""
        if self._owns_client:
            await self._client.aclose()
