"""One attempt, classified (respx stages the answers a real server rarely gives on cue)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
import respx

from batchchat.config.settings import EndpointConfig
from batchchat.http.httpx_sender import HttpxSender, build_client
from batchchat.http.outcomes import Failed, Fatal, Retryable, Success
from batchchat.secrets import Redactor, Secret

KEY = "sk-unit-secret-key-1234"
BASE = "http://api.test/v1"
ENDPOINT = EndpointConfig(base_url=BASE, api_key=Secret(KEY), api_key_env="MY_KEY", transport="httpx")


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


async def send(endpoint: EndpointConfig = ENDPOINT) -> object:
    async with build_client(endpoint, 4) as client:
        return await HttpxSender(client, endpoint, Redactor(endpoint.api_key)).send("/v1/chat/completions", b"{}")


async def test_success_and_auth_header(router: respx.MockRouter) -> None:
    route = router.post("/chat/completions").respond(200, json={"usage": {"prompt_tokens": 3}},
                                                     headers={"x-request-id": "req_1"})
    outcome = await send()
    assert isinstance(outcome, Success)
    assert outcome.body["usage"]["prompt_tokens"] == 3 and outcome.request_id == "req_1"
    assert route.calls.last.request.headers["authorization"] == f"Bearer {KEY}"


async def test_azure_sends_api_key_header_and_version(router: respx.MockRouter) -> None:
    route = router.post("/chat/completions").respond(200, json={})
    endpoint = EndpointConfig(base_url=BASE, api_key=Secret(KEY), azure_api_version="2024-10-21",
                              extra_headers=(("x-team", "data"),), transport="httpx")
    await send(endpoint)
    request = route.calls.last.request
    assert request.headers["api-key"] == KEY and "authorization" not in request.headers
    assert request.url.params["api-version"] == "2024-10-21"
    assert request.headers["x-team"] == "data"


@pytest.mark.parametrize(
    ("status", "kwargs", "kind", "reason"),
    [
        (200, {"content": b"<html>oops"}, Retryable, "invalid_json"),
        (200, {"content": b"[1]"}, Retryable, "invalid_json"),
        (400, {"json": {"error": {"message": "bad field"}}}, Failed, "http_400"),
        (404, {"json": {"error": {"message": "no model"}}}, Failed, "http_404"),
        (413, {"text": "too big"}, Failed, "http_413"),
        (422, {"json": {}}, Failed, "http_422"),
        (408, {"json": {}}, Retryable, "http_408"),
        (409, {"json": {}}, Retryable, "http_409"),
        (429, {"json": {"error": {"message": "slow down"}}}, Retryable, "rate_limited"),
        (500, {"json": {}}, Retryable, "http_500"),
        (502, {"text": "bad gateway"}, Retryable, "http_502"),
        (503, {"json": {}}, Retryable, "http_503"),
        (504, {"json": {}}, Retryable, "http_504"),
        (520, {"json": {}}, Retryable, "http_520"),
        (401, {"json": {"error": {"message": "Incorrect API key"}}}, Fatal, "http_401"),
        (403, {"json": {"error": {"message": "forbidden"}}}, Fatal, "http_403"),
    ],
)
async def test_statuses_are_classified(router: respx.MockRouter, status: int, kwargs: dict, kind: type,
                                       reason: str) -> None:
    router.post("/chat/completions").respond(status, **kwargs)
    outcome = await send()
    assert isinstance(outcome, kind)
    assert outcome.reason == reason  # type: ignore[union-attr]


async def test_fatal_names_the_key_variable_but_not_the_key(router: respx.MockRouter) -> None:
    router.post("/chat/completions").respond(401, json={"error": {"message": f"Incorrect API key {KEY}"}})
    outcome = await send()
    assert isinstance(outcome, Fatal)
    assert "MY_KEY" in outcome.message and KEY not in outcome.message


async def test_x_should_retry_overrides_the_status(router: respx.MockRouter) -> None:
    router.post("/chat/completions").mock(side_effect=[
        httpx.Response(500, headers={"x-should-retry": "false"}),
        httpx.Response(400, headers={"x-should-retry": "true"}),
    ])
    assert isinstance(await send(), Failed)
    assert isinstance(await send(), Retryable)


async def test_retry_after_forms(router: respx.MockRouter) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    router.post("/chat/completions").mock(side_effect=[
        httpx.Response(429, headers={"retry-after-ms": "250", "retry-after": "1"}),
        httpx.Response(429, headers={"retry-after": "3"}),
        httpx.Response(503, headers={"retry-after": when}),
        httpx.Response(503, headers={"retry-after": "soon"}),
    ])
    waits = [(await send()).retry_after for _ in range(4)]  # type: ignore[union-attr]
    assert waits[0] == 0.25 and waits[1] == 3.0
    assert 25 < waits[2] <= 30
    assert waits[3] is None


@pytest.mark.parametrize(("error", "reason"), [
    (httpx.ConnectError("refused"), "connection"),
    (httpx.RemoteProtocolError("peer closed"), "connection"),
    (httpx.ReadError("reset"), "connection"),
    (httpx.ReadTimeout("slow"), "timeout"),
    (httpx.ConnectTimeout("slow"), "timeout"),
])
async def test_network_errors_are_retryable(router: respx.MockRouter, error: Exception, reason: str) -> None:
    router.post("/chat/completions").mock(side_effect=error)
    outcome = await send()
    assert isinstance(outcome, Retryable) and outcome.reason == reason


async def test_echoed_key_is_redacted_from_body_and_message(router: respx.MockRouter) -> None:
    router.post("/chat/completions").respond(
        400, json={"error": {"message": f"bad request, headers: Authorization: Bearer {KEY}"}})
    outcome = await send()
    assert isinstance(outcome, Failed)
    assert KEY.encode() not in (outcome.raw or b"") and KEY not in outcome.message
    assert "[REDACTED]" in outcome.message


def test_url_joining() -> None:
    assert EndpointConfig(base_url="http://h/v1/").url_for("/v1/embeddings") == "http://h/v1/embeddings"
    # the base is used as given, as the OpenAI SDK does: the path goes on without its /v1
    assert EndpointConfig(base_url="http://h").url_for("/v1/embeddings") == "http://h/embeddings"
    assert EndpointConfig(base_url="http://h/openai").url_for("/v1/chat/completions") == (
        "http://h/openai/chat/completions")
    azure = "https://n.openai.azure.com/openai"
    assert EndpointConfig(base_url=f"{azure}/deployments/gpt", azure_api_version="2024-10-21").url_for(
        "/v1/chat/completions") == f"{azure}/deployments/gpt/chat/completions?api-version=2024-10-21"
    assert EndpointConfig(base_url=f"{azure}/v1", azure_api_version="preview").url_for(
        "/v1/embeddings") == f"{azure}/v1/embeddings?api-version=preview"


def test_secret_never_shows_itself() -> None:
    secret = Secret(KEY)
    assert KEY not in repr(secret) and KEY not in str(secret) and KEY not in f"{secret}"
    assert KEY not in repr(ENDPOINT)
