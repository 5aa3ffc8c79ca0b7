"""Answer classification (#10): `classify` tested directly, and both senders on every status and header it
reads. Before, only the httpx sender met these cases (through respx); the default aiohttp sender never met
408, 409, 413, 422, 504, `x-should-retry` or an HTTP-date Retry-After. What the simulator stages (429 with
and without Retry-After, 500, 502, 503, 403, 401, 400, broken bodies, drops, hangs) is run for both senders in
tests/test_senders.py; the rest is served here by a loopback server that answers what each case says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import formatdate

import pytest

from batchchat.config.settings import EndpointConfig
from batchchat.http.outcomes import Failed, Fatal, Retryable, Success, classify, retry_after
from batchchat.http.sender import open_sender
from batchchat.secrets import Redactor, Secret

KEY = "sk-classify-0123456789"
ENDPOINT = EndpointConfig(base_url="http://127.0.0.1:9/v1", api_key=Secret(KEY), api_key_env="MY_KEY")
REDACT = Redactor(ENDPOINT.api_key)
ERROR = b'{"error": {"message": "nope", "type": "invalid_request_error"}}'


def outcome(status: int, raw: bytes = ERROR, **headers: str):  # type: ignore[no-untyped-def]
    return classify(status, raw, {k.replace("_", "-"): v for k, v in headers.items()}, REDACT, ENDPOINT)


def test_200_with_a_json_object_is_a_success() -> None:
    result = outcome(200, b'{"id": "x", "usage": {"prompt_tokens": 3}}', x_request_id="req_1")
    assert isinstance(result, Success) and result.body["usage"] == {"prompt_tokens": 3}
    assert result.request_id == "req_1" and result.status == 200


@pytest.mark.parametrize(("raw", "words"), [(b"<html>busy</html>", "not JSON"), (b"[1, 2]", "not an object"),
                                            (b'"text"', "not an object"), (b"", "not JSON")])
def test_200_without_a_json_object_is_retried(raw: bytes, words: str) -> None:
    result = outcome(200, raw)
    assert isinstance(result, Retryable) and result.reason == "invalid_json" and words in result.message


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_client_errors_fail_this_request_only(status: int) -> None:
    result = outcome(status)
    assert isinstance(result, Failed) and result.reason == f"http_{status}"
    assert result.message == f"HTTP {status}: nope" and result.raw == ERROR


@pytest.mark.parametrize(("status", "verb"), [(401, "rejected the API key"), (403, "refused access")])
def test_401_and_403_are_fatal_and_name_the_variable(status: int, verb: str) -> None:
    result = outcome(status, b'{"error": {"message": "bad key ' + KEY.encode() + b'"}}')
    assert isinstance(result, Fatal) and result.reason == f"http_{status}"
    assert verb in result.message and "from MY_KEY" in result.message
    assert KEY not in result.message  # an echoed key is redacted


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 599])
def test_transient_statuses_are_retried(status: int) -> None:
    result = outcome(status)
    assert isinstance(result, Retryable) and result.status == status and result.retry_after is None
    assert result.reason == ("rate_limited" if status == 429 else f"http_{status}")


def test_x_should_retry_overrides_the_status() -> None:
    assert isinstance(outcome(400, x_should_retry="true"), Retryable)
    assert isinstance(outcome(422, x_should_retry="true"), Retryable)
    assert isinstance(outcome(500, x_should_retry="false"), Failed)
    assert isinstance(outcome(429, x_should_retry="false"), Failed)
    assert isinstance(outcome(401, x_should_retry="true"), Fatal)  # a refused key never retries


def test_retry_after_in_every_form() -> None:
    assert retry_after({"retry-after": "7"}) == 7.0
    assert retry_after({"retry-after": "1.5"}) == 1.5
    assert retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25  # the finer one wins
    assert retry_after({"retry-after-ms": "soon", "retry-after": "9"}) == 9.0
    in_30s = retry_after({"retry-after": formatdate(time.time() + 30, usegmt=True)})
    assert in_30s is not None and 25 <= in_30s <= 31  # an HTTP date, seconds from now
    assert retry_after({"retry-after": formatdate(time.time() - 60, usegmt=True)}) == 0.0  # past: now
    assert retry_after({"retry-after": "-3"}) == 0.0
    assert retry_after({"retry-after": "whenever"}) is None
    assert retry_after({}) is None
    result = outcome(429, retry_after="2")
    assert isinstance(result, Retryable) and result.retry_after == 2.0


# -- both senders, over loopback HTTP ---------------------------------------------------------------------------


@asynccontextmanager
async def answering(status: int, body: bytes, headers: dict[str, str]) -> AsyncIterator[str]:
    """A loopback server that answers every request with `status`, `headers` and `body`."""
    reason = {408: "Request Timeout", 409: "Conflict", 413: "Payload Too Large", 422: "Unprocessable Entity",
              504: "Gateway Timeout"}.get(status, "Whatever")
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), b"0"))
        await reader.readexactly(length)
        writer.write(f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: "
                     f"{len(body)}\r\n{extra}connection: close\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    finally:
        server.close()
        await server.wait_closed()


CASES = [
    (408, {}, Retryable, "http_408", None),
    (409, {}, Retryable, "http_409", None),
    (413, {}, Failed, "http_413", None),
    (422, {}, Failed, "http_422", None),
    (504, {}, Retryable, "http_504", None),
    (400, {"x-should-retry": "true"}, Retryable, "http_400", None),
    (503, {"x-should-retry": "false"}, Failed, "http_503", None),
    (429, {"retry-after-ms": "1500"}, Retryable, "rate_limited", 1.5),
    (429, {"Retry-After": "DATE+20"}, Retryable, "rate_limited", 20.0),
]


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize(("status", "headers", "kind", "reason", "wait"), CASES,
                         ids=[f"{c[0]}-{'-'.join(c[1]) or 'plain'}" for c in CASES])
async def test_both_senders_classify_alike(transport: str, status: int, headers: dict[str, str], kind: type,
                                           reason: str, wait: float | None) -> None:
    headers = {k: (formatdate(time.time() + 20, usegmt=True) if v == "DATE+20" else v) for k, v in headers.items()}
    async with answering(status, ERROR, headers) as base_url:
        config = EndpointConfig(base_url=base_url, api_key=Secret(KEY), api_key_env="MY_KEY", transport=transport)
        sender = open_sender(config, 2, Redactor(config.api_key))
        try:
            result = await sender.send("/v1/chat/completions", b'{"model": "gpt-4o-mini", "messages": []}')
        finally:
            await sender.aclose()
    assert isinstance(result, kind), result
    assert result.reason == reason and result.status == status
    if wait is not None:
        assert isinstance(result, Retryable) and result.retry_after is not None
        assert wait - 2.0 <= result.retry_after <= wait  # an HTTP date is read to the second
