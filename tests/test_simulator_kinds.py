"""Over loopback: limits per model, limiter kinds, retry-after styles, request ids, /stats per model, workers."""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest

from batchchat.simulator import Simulator
from batchchat.simulator.queueing import WorkerPool
from batchchat.simulator.stats import Stats


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def chat(model: str = "gpt-4o-mini", content: str = "abcd", max_tokens: int = 10) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}


CHARGE = 3 + 4 + 1 + 10  # prompt of chat("abcd") + max_tokens


def client_for(sim: Simulator) -> httpx.Client:
    return httpx.Client(base_url=sim.base_url, timeout=5, headers={"authorization": "Bearer sk-test-kinds"})


def test_limits_headers_and_429s_are_per_model(simulator: Callable[..., Simulator]) -> None:
    clock = FakeClock()
    sim = simulator(rpm=600, tpm=60_000, model_limits={"gpt-4o": (60, None), "o3-mini": (None, 6000)}, clock=clock)
    with client_for(sim) as client:
        r = client.post("/chat/completions", json=chat("gpt-4o"))
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit-requests"] == "60" and r.headers["x-ratelimit-remaining-requests"] == "59"
        assert "x-ratelimit-limit-tokens" not in r.headers  # gpt-4o: no token limit of its own
        r = client.post("/chat/completions", json=chat("gpt-4o"))
        assert r.status_code == 429
        error = r.json()["error"]
        assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
        assert error["message"].startswith("Rate limit reached for gpt-4o in organization")
        assert "(RPM): Limit 60, Used 1, Requested 1." in error["message"]
        assert r.headers["retry-after"] == "1" and r.headers["retry-after-ms"] == "1000"
        # Another model has its own pool, with the default limits.
        r = client.post("/chat/completions", json=chat("gpt-4o-mini"))
        assert r.status_code == 200
        usage = [r.json()["usage"]]
        assert r.headers["x-ratelimit-limit-requests"] == "600" and r.headers["x-ratelimit-limit-tokens"] == "60000"
        assert r.headers["x-ratelimit-remaining-tokens"] == str(60_000 - CHARGE)
        big = client.post("/chat/completions", json=chat("o3-mini", max_tokens=200))  # from a full bucket: admitted
        assert big.status_code == 200 and big.headers["x-ratelimit-remaining-tokens"] == str(6000 - 208)
        r = client.post("/chat/completions", json=chat("o3-mini", max_tokens=200))
        assert r.status_code == 429 and r.json()["error"]["type"] == "tokens"
        assert "Rate limit reached for o3-mini" in r.json()["error"]["message"]
        assert "x-ratelimit-limit-requests" not in r.headers and r.headers["x-ratelimit-limit-tokens"] == "6000"
        emb = client.post("/embeddings", json={"model": "text-embedding-3-small", "input": "a" * 40})
        assert emb.status_code == 200 and emb.headers["x-ratelimit-remaining-tokens"] == str(60_000 - 10)
        usage += [client.post("/chat/completions", json=chat("gpt-4o-mini", f"q{i}")).json()["usage"] for i in range(3)]
        clock.now += 1.0
        assert client.post("/chat/completions", json=chat("gpt-4o")).status_code == 200

    stats = sim.stats()
    # The global fields are as they were: all models together.
    assert stats["rate_limited"] == 2 and stats["rate_limited_requests"] == 1 and stats["rate_limited_tokens"] == 1
    assert stats["series"] == [
        {"t": 0, "requests": 7, "tokens": 5 * CHARGE + 10 + 208, "429": 2},
        {"t": 1, "requests": 1, "tokens": CHARGE, "429": 0},
    ]
    models = stats["models"]
    assert set(models) == {"gpt-4o", "gpt-4o-mini", "o3-mini", "text-embedding-3-small"}
    assert models["gpt-4o"]["requests"] == 2 and models["gpt-4o"]["rate_limited"] == 1
    assert models["gpt-4o"]["rate_limited_requests"] == 1 and models["gpt-4o"]["tokens_admitted"] == 2 * CHARGE
    assert models["gpt-4o"]["series"] == [
        {"t": 0, "requests": 1, "tokens": CHARGE, "429": 1},
        {"t": 1, "requests": 1, "tokens": CHARGE, "429": 0},
    ]
    mini = models["gpt-4o-mini"]
    assert mini["requests"] == 4 and mini["rate_limited"] == 0
    assert mini["prompt_tokens"] == sum(u["prompt_tokens"] for u in usage) == 4 * 8
    assert mini["completion_tokens"] == sum(u["completion_tokens"] for u in usage)
    assert models["o3-mini"] == {
        "requests": 1,
        "rate_limited": 1,
        "rate_limited_requests": 0,
        "rate_limited_tokens": 1,
        "tokens_admitted": 208,
        "prompt_tokens": 8,
        "completion_tokens": big.json()["usage"]["completion_tokens"],
        "series": [{"t": 0, "requests": 1, "tokens": 208, "429": 1}, {"t": 1, "requests": 0, "tokens": 0, "429": 0}],
    }
    embeddings = models["text-embedding-3-small"]
    assert embeddings["prompt_tokens"] == 10 and embeddings["completion_tokens"] == 0
    assert sum(m["prompt_tokens"] for m in models.values()) == stats["prompt_tokens"]
    assert sum(m["completion_tokens"] for m in models.values()) == stats["completion_tokens"]
    assert sum(m["tokens_admitted"] for m in models.values()) == stats["tokens_admitted"]
    for t in (0, 1):
        row = stats["series"][t]
        assert row["requests"] == sum(m["series"][t]["requests"] for m in models.values())
        assert row["429"] == sum(m["series"][t]["429"] for m in models.values())
    sim.reset_stats()
    assert sim.stats()["models"] == {}


def test_minute_kind_with_litellm_headers(simulator: Callable[..., Simulator]) -> None:
    clock = FakeClock(1000.0)  # 20 s left in the calendar minute [960, 1020)
    sim = simulator(
        rpm=2, tpm=1000, limit_kind="minute", retry_after_style="litellm", request_id_header="x-litellm-call-id",
        clock=clock,
    )
    with client_for(sim) as client:
        first = client.post("/chat/completions", json=chat())
        second = client.post("/chat/completions", json=chat())
        assert first.status_code == second.status_code == 200
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        assert second.headers["x-ratelimit-remaining-requests"] == "0"
        assert second.headers["x-ratelimit-limit-tokens"] == "1000"
        assert second.headers["x-ratelimit-remaining-tokens"] == str(1000 - 2 * CHARGE)
        clock.now = 1007.4
        refused = client.post("/chat/completions", json=chat())
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        for r in (first, second, refused):
            assert not any(name.startswith("x-ratelimit-reset") for name in r.headers)
            assert r.headers["x-litellm-call-id"].startswith("req_") and "x-request-id" not in r.headers
        assert refused.headers["llm_provider-retry-after"] == "13"  # ceil(1020 - 1007.4)
        assert "retry-after" not in refused.headers and "retry-after-ms" not in refused.headers
        assert len({r.headers["x-litellm-call-id"] for r in (first, second, refused)}) == 3
        clock.now = 1020.0
        assert client.post("/chat/completions", json=chat()).status_code == 200


def test_strict_kind_over_http_with_openai_retry_headers(simulator: Callable[..., Simulator]) -> None:
    clock = FakeClock(1000.25)
    sim = simulator(rpm=120, limit_kind="strict", limit_headers="admission", clock=clock)  # 2 a second
    with client_for(sim) as client:
        codes = [client.post("/chat/completions", json=chat()).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        refused = client.post("/chat/completions", json=chat())
        assert refused.headers["retry-after-ms"] == "750" and refused.headers["retry-after"] == "1"
        assert refused.headers["x-ratelimit-reset-requests"] == "750ms"
        assert "Please try again in 750ms." in refused.json()["error"]["message"]
        clock.now = 1001.0
        assert [client.post("/chat/completions", json=chat()).status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.parametrize(
    ("style", "present", "absent"),
    [
        ("openai", {"retry-after": "1", "retry-after-ms": "500"}, ("llm_provider-retry-after",)),
        ("litellm", {"llm_provider-retry-after": "20"}, ("retry-after", "retry-after-ms")),
        ("none", {}, ("retry-after", "retry-after-ms", "llm_provider-retry-after")),
    ],
)
def test_retry_after_styles_on_the_bucket_kind(
    simulator: Callable[..., Simulator], style: str, present: dict[str, str], absent: tuple[str, ...]
) -> None:
    sim = simulator(rpm=120, retry_after_style=style, clock=FakeClock(1000.0))  # bucket of 2, 500 ms per request
    with client_for(sim) as client:
        assert [client.post("/chat/completions", json=chat()).status_code for _ in range(2)] == [200, 200]
        refused = client.post("/chat/completions", json=chat())
    assert refused.status_code == 429
    for name, value in present.items():
        assert refused.headers[name] == value
    for name in absent:
        assert name not in refused.headers
    assert refused.headers["x-ratelimit-reset-requests"] == "1s"  # the limit headers are the same in every style


@pytest.mark.parametrize(
    ("style", "present", "absent"),
    [
        ("openai", {"retry-after": "1", "retry-after-ms": "1000"}, ("llm_provider-retry-after",)),
        ("litellm", {"llm_provider-retry-after": "20"}, ("retry-after", "retry-after-ms")),
        ("none", {}, ("retry-after", "retry-after-ms", "llm_provider-retry-after")),
    ],
)
def test_the_429_retry_after_fault_follows_the_style(
    simulator: Callable[..., Simulator], style: str, present: dict[str, str], absent: tuple[str, ...]
) -> None:
    sim = simulator(fault_sequence=("429_retry_after",), retry_after_style=style, clock=FakeClock(1000.0))
    with client_for(sim) as client:
        r = client.post("/chat/completions", json=chat())
    assert r.status_code == 429
    for name, value in present.items():
        assert r.headers[name] == value
    for name in absent:
        assert name not in r.headers


def test_every_api_answer_carries_a_request_id(simulator: Callable[..., Simulator]) -> None:
    sim = simulator(rpm=60, api_key="sk-right-key-123456", clock=FakeClock())
    good = {"authorization": "Bearer sk-right-key-123456"}
    with httpx.Client(base_url=sim.base_url, timeout=5) as client:
        answers = [
            client.post("/chat/completions", json=chat()),  # 401: no key
            client.post("/chat/completions", json=chat(), headers=good),  # 200
            client.post("/chat/completions", json=chat(), headers=good),  # 429
            client.post("/chat/completions", json={"model": "gpt-4o-mini"}, headers=good),  # 400
            client.post("/chat/completions", json=chat("no-such-model"), headers=good),  # 404
            client.post("/embeddings", json={"model": "text-embedding-3-small", "input": "x"}, headers=good),
            client.get("/models", headers=good),
            client.get("/nowhere"),
        ]
        assert [r.status_code for r in answers] == [401, 200, 429, 400, 404, 200, 200, 404]
        ids = [r.headers["x-request-id"] for r in answers]
        assert all(rid.startswith("req_") and len(rid) == 36 for rid in ids) and len(set(ids)) == len(ids)
        assert "x-request-id" not in client.get(sim.base_url.removesuffix("/v1") + "/stats").headers


# ---- a fixed number of workers with a FIFO queue ------------------------------------------------------

REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
)


def _raw_chat(content: str) -> bytes:
    body = orjson.dumps(chat(content=content))
    return REQUEST % (len(body), body)


def _wait_for(sim: Simulator, field: str, value: int) -> None:
    deadline = time.monotonic() + 5
    while sim.stats()[field] < value and time.monotonic() < deadline:
        time.sleep(0.002)
    assert sim.stats()[field] >= value


def test_one_worker_serves_in_arrival_order(simulator: Callable[..., Simulator]) -> None:
    sim = simulator(workers=1, latency_ms=40)
    socks = []
    started = time.monotonic()
    try:
        for i in range(4):  # arrive one after the other: each is in flight before the next is sent
            sock = socket.create_connection(("127.0.0.1", sim.port), timeout=5)
            sock.sendall(_raw_chat(f"request {i}"))
            socks.append(sock)
            _wait_for(sim, "in_flight", i + 1)
        stats = sim.stats()
        assert stats["serving"] == 1 and stats["queued"] == 3
        order = []
        with selectors.DefaultSelector() as selector:
            for i, sock in enumerate(socks):
                selector.register(sock, selectors.EVENT_READ, i)
            while len(order) < 4:
                for key, _ in selector.select(timeout=5):
                    assert key.fileobj.recv(65536).startswith(b"HTTP/1.1 200")  # type: ignore[union-attr]
                    selector.unregister(key.fileobj)
                    order.append(key.data)
        elapsed = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
    assert order == [0, 1, 2, 3]
    assert elapsed >= 4 * 0.040 * 0.9  # queue wait + service time: one after the other
    stats = sim.stats()
    assert stats["max_serving"] == 1 and stats["max_queued"] == 3
    assert stats["serving"] == 0 and stats["queued"] == 0


def test_in_flight_at_the_workers_never_exceeds_n(simulator: Callable[..., Simulator]) -> None:
    sim = simulator(workers=3, latency_ms=20)
    with ThreadPoolExecutor(12) as pool, client_for(sim) as client:
        codes = list(pool.map(lambda i: client.post("/chat/completions", json=chat(content=f"q{i}")).status_code,
                              range(36)))
    assert codes == [200] * 36
    stats = sim.stats()
    assert stats["max_serving"] == 3 and stats["max_in_flight"] > 3 and stats["max_queued"] >= 1
    assert stats["serving"] == stats["queued"] == stats["in_flight"] == 0


def test_errors_skip_the_queue_and_a_client_leaving_frees_its_place(simulator: Callable[..., Simulator]) -> None:
    sim = simulator(workers=1, latency_ms=300)
    first = socket.create_connection(("127.0.0.1", sim.port), timeout=5)
    second = socket.create_connection(("127.0.0.1", sim.port), timeout=5)
    try:
        first.sendall(_raw_chat("first"))
        _wait_for(sim, "serving", 1)
        second.sendall(_raw_chat("second"))
        _wait_for(sim, "queued", 1)
        with client_for(sim) as client:  # a 400 and a 404 are answered at once, the worker busy or not
            assert client.post("/chat/completions", json={"model": "gpt-4o-mini"}).status_code == 400
            assert client.post("/chat/completions", json=chat("no-such-model")).status_code == 404
            second.close()  # the queued client gives up: its place goes
            deadline = time.monotonic() + 5
            while sim.stats()["queued"] and time.monotonic() < deadline:
                time.sleep(0.002)
            assert sim.stats()["queued"] == 0
            first.close()  # the served client goes: the worker is free again
            while sim.stats()["serving"] and time.monotonic() < deadline:
                time.sleep(0.002)
            assert sim.stats()["serving"] == 0
            assert client.post("/chat/completions", json=chat()).status_code == 200
    finally:
        first.close()
        second.close()
    assert sim.stats()["max_serving"] == 1


def test_worker_pool_is_fifo_without_a_loop() -> None:
    stats = Stats(FakeClock())
    pool = WorkerPool(2, stats)
    started: list[int] = []
    starts = [lambda i=i: started.append(i) for i in range(5)]
    for start in starts:
        pool.enter(start)
    assert started == [0, 1] and (stats.serving, stats.queued, stats.max_queued) == (2, 3, 3)
    pool.release()
    assert started == [0, 1, 2]
    assert pool.cancel(starts[3]) and not pool.cancel(starts[3]) and stats.queued == 1
    pool.release()
    assert started == [0, 1, 2, 4] and stats.queued == 0
    pool.release()
    pool.release()
    assert stats.serving == 0 and pool.free == 2 and stats.max_serving == 2
    with pytest.raises(ValueError):
        WorkerPool(0, stats)
