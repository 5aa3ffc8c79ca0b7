"""The simulator over real HTTP on loopback: routes, token rules, validation, limits, stats."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from batchchat.simulator import Simulator, SimulatorConfig


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def start() -> Iterator[Callable[..., tuple[Simulator, httpx.Client]]]:
    """Start simulators in threads with the given config fields; close them all afterwards."""
    running: list[tuple[Simulator, httpx.Client]] = []

    def _start(**fields: Any) -> tuple[Simulator, httpx.Client]:
        sim = Simulator.in_thread(SimulatorConfig(**fields))
        client = httpx.Client(base_url=sim.base_url, timeout=5)
        running.append((sim, client))
        return sim, client

    yield _start
    for sim, client in running:
        client.close()
        sim.close()


def chat(content: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}


def test_chat_shape_and_prompt_rule(start: Callable[..., tuple[Simulator, httpx.Client]]) -> None:
    _, client = start()
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "x" * 9}, {"role": "user", "content": "hello"}],
    }
    r = client.post("/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    data = r.json()
    assert data["id"].startswith("chatcmpl-") and data["object"] == "chat.completion"
    assert data["model"] == "gpt-4o-mini" and isinstance(data["created"], int)
    choice = data["choices"][0]
    assert choice["message"]["role"] == "assistant"
    usage = data["usage"]
    assert usage["prompt_tokens"] == 3 + (4 + 3) + (4 + 2)  # ceil(9/4)=3, ceil(5/4)=2
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert len(choice["message"]["content"].split()) == usage["completion_tokens"]
    assert 1 <= usage["completion_tokens"] <= 64
    assert choice["finish_reason"] in ("stop", "length")


def test_completion_tokens_deterministic_and_capped(start: Callable[..., tuple[Simulator, httpx.Client]]) -> None:
    _, client = start(seed=7)
    _, other = start(seed=7)
    for i in range(20):
        body = chat(f"question {i}", max_tokens=5, n=2)
        a = client.post("/chat/completions", json=body).json()
        b = other.post("/chat/completions", json=body).json()
        assert a["usage"] == b["usage"]
        assert [c["message"]["content"] for c in a["choices"]] == [c["message"]["content"] for c in b["choices"]]
        for choice in a["choices"]:
            words = len(choice["message"]["content"].split())
            assert words <= 5
            assert choice["finish_reason"] == ("length" if words == 5 else "stop")
    capped = client.post("/chat/completions", json=chat(max_completion_tokens=1)).json()
    assert capped["usage"]["completion_tokens"] == 1 and capped["choices"][0]["finish_reason"] == "length"


def test_other_routes(start: Callable[..., tuple[Simulator, httpx.Client]]) -> None:
    _, client = start()
    emb = client.post("/embeddings", json={"model": "text-embedding-3-small", "input": ["abcd", "abcdefgh"]})
    data = emb.json()
    assert data["object"] == "list" and len(data["data"]) == 2
    assert len(data["data"][0]["embedding"]) == 8 and all(isinstance(v, float) for v in data["data"][0]["embedding"])
    assert data["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    again = client.post("/embeddings", json={"model": "text-embedding-3-small", "input": "abcd"}).json()
    assert again["data"][0]["embedding"] == data["data"][0]["embedding"]

    instruct = {"model": "gpt-3.5-turbo-instruct", "prompt": "abcdefgh", "max_tokens": 3}
    comp = client.post("/completions", json=instruct).json()
    assert comp["id"].startswith("cmpl-") and comp["object"] == "text_completion"
    assert comp["usage"]["prompt_tokens"] == 2 and comp["usage"]["completion_tokens"] <= 3
    assert isinstance(comp["choices"][0]["text"], str)

    resp = client.post("/responses", json={"model": "gpt-4o-mini", "input": "abcd", "max_output_tokens": 4}).json()
    assert resp["object"] == "response" and resp["id"].startswith("resp_")
    part = resp["output"][0]["content"][0]
    assert part["type"] == "output_text"
    usage = resp["usage"]
    assert usage["input_tokens"] == 3 + 4 + 1 and usage["output_tokens"] <= 4
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert len(part["text"].split()) == usage["output_tokens"]

    models = client.get("/models").json()
    assert models["object"] == "list" and models["data"][0]["object"] == "model"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ("/chat/completions", {"model": "gpt-4o-mini"}, "messages"),
        ("/chat/completions", {"model": "gpt-4o-mini", "messages": []}, "messages"),
        ("/chat/completions", {"model": "gpt-4o-mini", "messages": "hi"}, "messages"),
        ("/chat/completions", chat(stream="yes"), "stream"),
        ("/chat/completions", chat(n=0), "n"),
        ("/chat/completions", chat(max_tokens=0), "max_tokens"),
        ("/chat/completions", chat(max_tokens="10"), "max_tokens"),
        ("/embeddings", {"model": "text-embedding-3-small"}, "input"),
        ("/responses", {"model": "gpt-4o-mini"}, "input"),
        ("/completions", {"model": "gpt-3.5-turbo-instruct"}, "prompt"),
    ],
)
def test_invalid_requests_get_openai_400(
    start: Callable[..., tuple[Simulator, httpx.Client]], path: str, body: dict[str, Any], param: str
) -> None:
    _, client = start()
    r = client.post(path, json=body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


def test_stream_and_non_object_bodies(start: Callable[..., tuple[Simulator, httpx.Client]]) -> None:
    _, client = start()
    r = client.post("/chat/completions", json=chat(stream=True))
    assert r.status_code == 400 and "not supported" in r.json()["error"]["message"]
    for raw in (b"[1, 2]", b"not json", b""):
        r = client.post("/chat/completions", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_unknown_path_and_wrong_method(start: Callable[..., tuple[Simulator, httpx.Client]]) -> None:
    _, client = start()
    r = client.get("/nothing/here")
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    r = client.get("/chat/completions")
    assert r.status_code == 405 and "error" in r.json()


def test_rate_limit_headers_and_429s_with_fake_clock(start: Callable[..., tuple[Simulator, httpx.Client]]) -> None:
    clock = FakeClock()
    _, client = start(rpm=120, tpm=60_000, clock=clock)  # 2 requests, 1,000 tokens per second
    body = chat("abcd", max_tokens=100)  # charge = 3 + 4 + 1 + 100 = 108
    auth = {"Authorization": "Bearer key-a"}
    r = client.post("/chat/completions", json=body, headers=auth)
    assert r.status_code == 200
    assert r.headers["x-ratelimit-limit-requests"] == "120"
    assert r.headers["x-ratelimit-limit-tokens"] == "60000"
    assert r.headers["x-ratelimit-remaining-requests"] == "119"
    assert r.headers["x-ratelimit-remaining-tokens"] == str(60_000 - 108)
    assert r.headers["x-ratelimit-reset-requests"] == "500ms"
    assert r.headers["x-ratelimit-reset-tokens"] == "108ms"
    assert client.post("/chat/completions", json=body, headers=auth).status_code == 200
    r = client.post("/chat/completions", json=body, headers=auth)
    assert r.status_code == 429
    error = r.json()["error"]
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
    assert "Please try again in 500ms." in error["message"]
    assert r.headers["retry-after"] == "1" and r.headers["retry-after-ms"] == "500"
    assert r.headers["x-ratelimit-remaining-requests"] == "118"
    # Another key (Azure header) has its own buckets.
    assert client.post("/chat/completions", json=body, headers={"api-key": "key-b"}).status_code == 200
    clock.now += 0.5
    assert client.post("/chat/completions", json=body, headers=auth).status_code == 200


def test_token_429_and_request_too_large(start: Callable[..., tuple[Simulator, httpx.Client]]) -> None:
    clock = FakeClock()
    _, client = start(tpm=6000, clock=clock)  # 100 tokens per second, burst 100
    body = chat("abcd", max_tokens=40)  # charge 48
    assert client.post("/chat/completions", json=body).status_code == 200
    assert client.post("/chat/completions", json=body).status_code == 200
    r = client.post("/chat/completions", json=body)
    assert r.status_code == 429 and r.json()["error"]["type"] == "tokens"
    assert r.headers["retry-after-ms"] == "440" and r.headers["retry-after"] == "1"
    r = client.post("/chat/completions", json=chat(max_tokens=7000))
    assert r.status_code == 429 and "Request too large" in r.json()["error"]["message"]


def test_headers_off(start: Callable[..., tuple[Simulator, httpx.Client]]) -> None:
    _, client = start(rpm=60, rate_limit_headers=False, clock=FakeClock())
    r = client.post("/chat/completions", json=chat())
    assert r.status_code == 200 and not any(h.startswith("x-ratelimit") for h in r.headers)
    r = client.post("/chat/completions", json=chat())
    assert r.status_code == 429 and "retry-after" in r.headers
    assert not any(h.startswith("x-ratelimit") for h in r.headers)


def test_api_key_401(start: Callable[..., tuple[Simulator, httpx.Client]]) -> None:
    _, client = start(api_key="sk-secret-123456")
    r = client.post("/chat/completions", json=chat())
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = client.post("/chat/completions", json=chat(), headers={"Authorization": "Bearer sk-wrong-999999"})
    assert r.status_code == 401 and "sk-wrong-999999" not in r.text
    ok = {"Authorization": "Bearer sk-secret-123456"}
    assert client.post("/chat/completions", json=chat(), headers=ok).status_code == 200
    assert client.post("/chat/completions", json=chat(), headers={"api-key": "sk-secret-123456"}).status_code == 200


def test_stats_counts_series_and_reset(start: Callable[..., tuple[Simulator, httpx.Client]]) -> None:
    clock = FakeClock()
    sim, client = start(rpm=60, clock=clock)  # one request per second
    root = sim.base_url.removesuffix("/v1")
    body = chat("abcd", max_tokens=10)  # charge 18
    assert client.post("/chat/completions", json=body).status_code == 200
    assert client.post("/chat/completions", json=body).status_code == 429
    clock.now += 2.0
    assert client.post("/chat/completions", json=body).status_code == 200
    client.post("/chat/completions", json={"model": "gpt-4o-mini"})
    stats = httpx.get(root + "/stats").json()
    assert stats == sim.stats()
    assert stats["requests"] == 4
    assert stats["responses"] == {"200": 2, "400": 1, "429": 1}
    assert stats["tokens_admitted"] == 36 and stats["prompt_tokens"] == 16
    assert stats["completion_tokens"] >= 2 and stats["rate_limited"] == 1
    assert stats["in_flight"] == 0 and stats["max_in_flight"] == 1
    assert stats["series"] == [
        {"t": 0, "requests": 1, "tokens": 18, "429": 1},
        {"t": 1, "requests": 0, "tokens": 0, "429": 0},
        {"t": 2, "requests": 1, "tokens": 18, "429": 0},
    ]
    assert httpx.post(root + "/stats/reset").status_code == 200
    stats = sim.stats()
    assert stats["requests"] == 0 and stats["responses"] == {} and stats["series"] == []
    client.post("/chat/completions", json=body)
    sim.reset_stats()
    assert sim.stats()["requests"] == 0


def test_prompt_tokens_charged_for_embeddings_only(start: Callable[..., tuple[Simulator, httpx.Client]]) -> None:
    sim, client = start(tpm=600_000, clock=FakeClock())
    client.post("/embeddings", json={"model": "text-embedding-3-small", "input": "a" * 40})
    client.post("/chat/completions", json=chat("abcd", max_tokens=5, n=3))
    assert sim.stats()["tokens_admitted"] == 10 + (8 + 5 * 3)
    assert math.isclose(sim.stats()["series"][0]["tokens"], 33)


def test_azure_style_path_and_query(start: Callable[..., tuple[Simulator, httpx.Client]]) -> None:
    sim, _ = start()
    root = sim.base_url.removesuffix("/v1")
    url = root + "/openai/deployments/gpt4/chat/completions?api-version=2024-06-01"
    r = httpx.post(url, json=chat(), headers={"api-key": "k"})
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"
