"""Both senders (aiohttp, the default, and httpx's own transport) against real loopback servers.

The same fault, served by the simulator, must give the same outcome whichever transport sent the request:
the engine, the retry policy and the limiter see only outcomes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from batchchat.config.settings import EndpointConfig
from batchchat.http.outcomes import Failed, Fatal, Outcome, Retryable, Success
from batchchat.http.sender import open_sender
from batchchat.secrets import Redactor, Secret
from batchchat.simulator import Simulator

KEY = "sk-sender-secret-0123456789"
TRANSPORTS = ["aiohttp", "httpx"]
BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":4}'


async def send_once(transport: str, base_url: str, key: str | None = KEY, **endpoint: Any) -> Outcome:
    config = EndpointConfig(base_url=base_url, api_key=Secret(key) if key else None, api_key_env="SIM_KEY",
                            transport=transport, **endpoint)
    sender = open_sender(config, 4, Redactor(config.api_key))
    try:
        return await sender.send("/v1/chat/completions", BODY)
    finally:
        await sender.aclose()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_success_carries_body_headers_and_request_id(simulator: Callable[..., Simulator],
                                                           transport: str) -> None:
    sim = simulator(api_key=KEY, rpm=6000)
    outcome = await send_once(transport, sim.base_url)
    assert isinstance(outcome, Success), outcome
    assert outcome.status == 200 and outcome.body["usage"]["completion_tokens"] > 0
    assert outcome.request_id and outcome.request_id.startswith("req_")
    assert outcome.headers["X-RateLimit-Limit-Requests"] == "6000"  # headers are read case-insensitively


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_wrong_and_missing_key_are_fatal_and_never_shown(simulator: Callable[..., Simulator],
                                                                transport: str) -> None:
    sim = simulator(api_key="sk-the-right-one-000")
    wrong = await send_once(transport, sim.base_url)
    missing = await send_once(transport, sim.base_url, key=None)
    assert isinstance(wrong, Fatal) and wrong.status == 401 and "SIM_KEY" in wrong.message
    assert KEY not in wrong.message
    assert isinstance(missing, Fatal) and "SIM_KEY (not set)" in missing.message


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("fault", "kind", "reason", "retry_after"), [
    ("429_retry_after", Retryable, "rate_limited", 1.0),
    ("429", Retryable, "rate_limited", None),
    ("503_retry_after", Retryable, "http_503", 1.0),
    ("500", Retryable, "http_500", None),
    ("502", Retryable, "http_502", None),
    ("403", Fatal, "http_403", None),
    ("non_json", Retryable, "invalid_json", None),
    ("drop", Retryable, "connection", None),
    ("truncate", Retryable, "connection", None),
])
async def test_faults_are_classified_alike(simulator: Callable[..., Simulator], transport: str, fault: str,
                                           kind: type, reason: str, retry_after: float | None) -> None:
    sim = simulator(fault_sequence=[fault])
    outcome = await send_once(transport, sim.base_url)
    assert isinstance(outcome, kind), outcome
    assert outcome.reason == reason
    if retry_after is not None:
        assert outcome.retry_after == retry_after  # type: ignore[union-attr]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_hang_is_a_timeout(simulator: Callable[..., Simulator], transport: str) -> None:
    sim = simulator(fault_sequence=["hang"])
    outcome = await send_once(transport, sim.base_url, read_timeout=0.3)
    assert isinstance(outcome, Retryable) and outcome.reason == "timeout", outcome
    assert outcome.message == "timeout: no answer within 0.3 s"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_refused_connection_is_retryable(transport: str) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens there now
    outcome = await send_once(transport, f"http://127.0.0.1:{port}/v1")
    assert isinstance(outcome, Retryable) and outcome.reason == "connection", outcome


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_echoed_key_is_redacted(simulator: Callable[..., Simulator], transport: str) -> None:
    sim = simulator(fault_sequence=["echo_headers"])
    outcome = await send_once(transport, sim.base_url)
    assert isinstance(outcome, Failed) and outcome.status == 400
    assert KEY not in outcome.message and KEY.encode() not in (outcome.raw or b"")
    assert "[REDACTED]" in outcome.message


@asynccontextmanager
async def capture_server(seen: list[bytes]) -> AsyncIterator[str]:
    """A loopback server that records each request head and answers `{}`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), b"0"))
        await reader.readexactly(length)
        seen.append(head)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n"
                     b"connection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_request_line_and_headers(transport: str) -> None:
    seen: list[bytes] = []
    async with capture_server(seen) as root:
        openai = await send_once(transport, root + "/v1", extra_headers=(("x-team", "data"),))
        azure = await send_once(transport, root + "/openai/deployments/gpt", azure_api_version="2024-10-21")
    assert isinstance(openai, Success) and isinstance(azure, Success)
    first, second = (head.decode("latin-1").lower() for head in seen)
    assert first.startswith("post /v1/chat/completions http/1.1\r\n")
    assert f"authorization: bearer {KEY}".lower() in first and "x-team: data" in first
    assert "content-type: application/json" in first and "user-agent: batchchat" in first
    assert second.startswith("post /openai/deployments/gpt/chat/completions?api-version=2024-10-21 http/1.1")
    assert f"api-key: {KEY}".lower() in second and "authorization" not in second


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_environment_proxy_is_used_and_no_proxy_obeyed(transport: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []
    async with capture_server(seen) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("NO_PROXY", "")
        via_proxy = await send_once(transport, "http://api.example.test/v1")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        direct = await send_once(transport, proxy + "/v1")  # the same server, reached without the proxy
    assert isinstance(via_proxy, Success) and isinstance(direct, Success)
    first, second = (head.decode("latin-1").lower() for head in seen)
    assert first.startswith("post http://api.example.test/v1/chat/completions http/1.1")  # a proxy's request line
    assert second.startswith("post /v1/chat/completions http/1.1")
