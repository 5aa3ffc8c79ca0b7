"""A small client of OpenAI's Files and Batches API on aiohttp: upload (multipart), create, retrieve, list,
cancel, and download a file's content to disk (streamed).

Every call retries what the online path retries (429, 408, 409, 5xx, dropped connections) with capped
exponential backoff and jitter, obeying `Retry-After`; 401/403 raise `FatalEndpointError`; any other
answer raises `BatchApiError` with the provider's message. The key is sent in a header and never appears
in an error message (the `Redactor` scrubs it).
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson

from batchchat.config.settings import EndpointConfig
from batchchat.errors import FatalEndpointError
from batchchat.http.outcomes import retry_after
from batchchat.http.request import describe, request_headers
from batchchat.secrets import Redactor

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class BatchApiError(Exception):
    """The Batch API refused a call (not a retryable failure): the status, code and provider's message."""

    def __init__(self, status: int | None, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class AmbiguousError(Exception):
    """An upload or a creation whose fate is unknown (connection lost, 5xx): look it up before trying again."""


class BatchClient:
    """Calls to `/v1/files` and `/v1/batches`, with retries. Use as an async context manager."""

    def __init__(self, endpoint: EndpointConfig, *, max_attempts: int = 8, backoff_base: float = 0.5,
                 backoff_max: float = 30.0, max_wait: float = 120.0,
                 sleep: Callable[[float], Awaitable[None]] = anyio.sleep) -> None:
        self._endpoint = endpoint
        self._redact = Redactor(endpoint.api_key)
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_wait = max_wait
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        self.rate_limited = 0  # 429 answers seen (upload, create, poll)
        self.retries = 0

    async def __aenter__(self) -> BatchClient:
        headers = request_headers(self._endpoint)
        headers.pop("content-type", None)  # set per call: JSON, or multipart for an upload
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._endpoint.connect_timeout,
                                          sock_read=self._endpoint.read_timeout),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ---- the calls ---------------------------------------------------------------------------------------

    async def upload(self, path: Path, filename: str) -> dict[str, Any]:
        """`POST /files` (purpose batch), the file streamed from disk under `filename`: the file object."""

        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field("purpose", "batch")
            data.add_field("file", path.open("rb"), filename=filename, content_type="application/jsonl")
            return data

        return await self._json("POST", "/v1/files", form=form, safe=False)

    async def create(self, input_file_id: str, endpoint: str, metadata: dict[str, str]) -> dict[str, Any]:
        """`POST /batches` with a 24h completion window: the batch object."""
        body = {"input_file_id": input_file_id, "endpoint": endpoint, "completion_window": "24h",
                "metadata": metadata}
        return await self._json("POST", "/v1/batches", body=body, safe=False)

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        """`GET /batches/{id}`."""
        return await self._json("GET", f"/v1/batches/{batch_id}")

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        """`POST /batches/{id}/cancel`."""
        return await self._json("POST", f"/v1/batches/{batch_id}/cancel")

    async def list_files(self, page_size: int = 10_000) -> AsyncIterator[dict[str, Any]]:
        """Every batch-purpose file, newest first."""
        async for item in self._pages("/v1/files", {"purpose": "batch", "limit": str(page_size)}):
            yield item

    async def list_batches(self, page_size: int = 100) -> AsyncIterator[dict[str, Any]]:
        """Every batch, newest first."""
        async for item in self._pages("/v1/batches", {"limit": str(page_size)}):
            yield item

    async def download(self, file_id: str, dest: Path) -> int:
        """`GET /files/{id}/content` streamed to `dest` (written whole and fsynced, or not at all): its bytes."""
        tmp = dest.with_name(dest.name + ".part")

        async def fetch(response: aiohttp.ClientResponse) -> int:
            size = 0
            with tmp.open("wb") as handle:
                async for block in response.content.iter_chunked(1 << 20):
                    handle.write(block)
                    size += len(block)
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(dest)
            return size

        return await self._call("GET", f"/v1/files/{file_id}/content", consume=fetch)

    # ---- plumbing ----------------------------------------------------------------------------------------

    async def _pages(self, path: str, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        after: str | None = None
        while True:
            query = dict(params)
            if after:
                query["after"] = after
            page = await self._json("GET", path, params=query)
            data = page.get("data") or []
            for item in data:
                yield item
            if not page.get("has_more") or not data:
                return
            after = page.get("last_id") or data[-1].get("id")

    async def _json(self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None,
                    form: Callable[[], aiohttp.FormData] | None = None, safe: bool = True) -> dict[str, Any]:
        async def parse(response: aiohttp.ClientResponse) -> dict[str, Any]:
            raw = await response.read()
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise _Retry(None, f"the answer to {method} {path} is not JSON") from None
            if not isinstance(data, dict):
                raise BatchApiError(response.status, None, f"unexpected answer to {method} {path}")
            return data

        return await self._call(method, path, body=body, params=params, form=form, consume=parse, safe=safe)

    async def _call(self, method: str, path: str, *, consume: Callable[[aiohttp.ClientResponse], Awaitable[Any]],
                    body: Any = None, params: dict[str, str] | None = None,
                    form: Callable[[], aiohttp.FormData] | None = None, safe: bool = True) -> Any:
        """One call with retries. `safe=False` (an upload, a creation): a failure that may have done the work
        (connection lost, 5xx) raises `AmbiguousError` instead of trying again; a 429 is retried in place."""
        assert self._session is not None, "use BatchClient as an async context manager"
        url = self._endpoint.url_for(path)
        last = ""
        for attempt in range(1, self._max_attempts + 1):
            wait: float | None = None
            try:
                kwargs: dict[str, Any] = {"params": params}
                if form is not None:
                    kwargs["data"] = form()
                elif body is not None:
                    kwargs["data"] = orjson.dumps(body)
                    kwargs["headers"] = {"content-type": "application/json"}
                async with self._session.request(method, url, **kwargs) as response:
                    if response.status < 300:
                        return await consume(response)
                    raw = await response.read()
                    code, message = _error_of(raw)
                    message = self._redact.text(message)
                    if response.status in (401, 403):
                        raise FatalEndpointError(f"{method} {path}: {response.status} {message}")
                    if response.status not in RETRY_STATUSES or code == "insufficient_quota":
                        raise BatchApiError(response.status, code, f"{method} {path}: {response.status} {message}")
                    if response.status == 429:
                        self.rate_limited += 1
                    elif not safe:
                        raise AmbiguousError(f"{method} {path}: {response.status} {message}")
                    wait = retry_after(response.headers)
                    last = f"{response.status} {message}"
            except _Retry as exc:
                last = exc.message
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = self._redact.text(describe(exc))
                if not safe:
                    raise AmbiguousError(f"{method} {path}: {last}") from None
            if attempt == self._max_attempts:
                break
            self.retries += 1
            backoff = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            await self._sleep(min(self._max_wait, max(backoff, wait or 0.0)))
        raise BatchApiError(None, "retries_exhausted", f"{method} {path}: gave up after "
                            f"{self._max_attempts} attempts: {last}")


class _Retry(Exception):
    def __init__(self, code: str | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _error_of(raw: bytes) -> tuple[str | None, str]:
    """The code and message of an OpenAI error body, or the start of the body."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, raw[:200].decode("utf-8", "replace").strip() or "(empty body)"
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return error.get("code"), str(error.get("message") or "")
    return None, raw[:200].decode("utf-8", "replace")
