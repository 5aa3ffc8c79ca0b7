"""The default sender: aiohttp driven directly, the fastest Python HTTP client measured here (DESIGN.md)."""

from __future__ import annotations

import urllib.request

import aiohttp
import yarl

from batchchat.config.settings import EndpointConfig
from batchchat.http.outcomes import Outcome, Retryable, classify
from batchchat.http.request import describe, request_headers, timeout_message
from batchchat.secrets import Redactor


class AiohttpSender:
    """The default `Sender`: aiohttp driven directly, half the CPU per request of httpx over the same aiohttp."""

    __slots__ = ("_endpoint", "_proxy", "_redact", "_session", "_urls")

    def __init__(self, endpoint: EndpointConfig, concurrency: int, redactor: Redactor) -> None:
        self._endpoint = endpoint
        self._redact = redactor
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=0, keepalive_timeout=30.0),
            headers=request_headers(endpoint),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=endpoint.connect_timeout,
                                          sock_read=endpoint.read_timeout),
            cookie_jar=aiohttp.DummyCookieJar(),  # an API sets no cookies; a real jar costs per response
        )
        base = yarl.URL(endpoint.base_url)
        # the environment's proxy, looked up once: aiohttp's trust_env would look it up on every request
        self._proxy = _env_proxy(base.scheme, base.host or "")
        self._urls: dict[str, yarl.URL] = {}

    async def send(self, path: str, content: bytes) -> Outcome:
        """POST `content` to the endpoint `path` and classify the answer."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = yarl.URL(self._endpoint.url_for(path))
        try:
            async with self._session.post(url, data=content, proxy=self._proxy) as response:
                raw = await response.read()
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors too
            connect = isinstance(exc, aiohttp.ConnectionTimeoutError)
            return Retryable("timeout", timeout_message(connect, self._endpoint))
        except aiohttp.ClientError as exc:  # refused, reset, dropped, truncated, unreadable answer
            return Retryable("connection", self._redact.text(describe(exc)))
        return classify(response.status, raw, response.headers, self._redact, self._endpoint)

    async def aclose(self) -> None:
        """Close the session and its connections."""
        await self._session.close()


def _env_proxy(scheme: str, host: str) -> str | None:
    """The proxy the environment (HTTPS_PROXY, NO_PROXY, ...) names for this scheme and host, as httpx would."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    return proxy
