"""What only the Redis store does: the server's clock, skewed hosts, nothing secret stored, expiry, an unreachable
server, and processes hammering one budget at once (a real redis-server; real subprocesses)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis_server import RedisServer, free_port

from batchchat.pacing.bucket import Limits
from batchchat.pacing.redis_store import RedisStore, SharedStoreUnavailable, namespace, redact_url

API_KEY = "sk-test-0123456789abcdef"
BASE_URL = "http://127.0.0.1:1/v1"
MODEL = "gpt-4o-mini"
KEY = namespace(API_KEY, BASE_URL, MODEL)
ROOT = Path(__file__).resolve().parent.parent


async def _server_time(url: str) -> float:
    client = aioredis.Redis.from_url(url)
    try:
        seconds, micros = await client.time()
        return seconds + micros / 1e6
    finally:
        await client.aclose()


def test_namespace_is_a_hash_of_key_endpoint_and_model() -> None:
    assert len(KEY) == 64 and int(KEY, 16) >= 0
    assert namespace(API_KEY, BASE_URL + "/", MODEL) == KEY  # a trailing slash is the same endpoint
    assert namespace(API_KEY, BASE_URL, "text-embedding-3-small") != KEY
    assert namespace("sk-other", BASE_URL, MODEL) != KEY
    assert namespace("ab", "c", MODEL) != namespace("a", "bc", MODEL)  # no ambiguity at the seams
    assert RedisStore.budget_key(KEY) == f"batchchat:{{{KEY}}}:budget"  # one hash tag: one cluster slot


async def test_reservations_are_timed_by_the_redis_server(redis_url: str) -> None:
    store = RedisStore(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    try:
        before = await _server_time(redis_url)
        assert await store.reserve(KEY, Limits(rpm=60), 1) == 0.0
        after = await _server_time(redis_url)
        stamp = float(await client.hget(RedisStore.budget_key(KEY), "stamp"))
        assert before <= stamp <= after
        # the next one waits for the rest of the second since that stamp, by the server's clock
        wait = await store.reserve(KEY, Limits(rpm=60), 1)
        assert 0.0 < wait <= 1.0
    finally:
        await store.close()
        await client.aclose()


SKEWED = textwrap.dedent(
    """
    import asyncio, sys, time
    real_time, real_monotonic = time.time, time.monotonic
    offset = float(sys.argv[3])
    time.time = lambda: real_time() + offset  # this host's clock is hours off
    time.monotonic = lambda: real_monotonic() + offset
    from batchchat.pacing.bucket import Limits
    from batchchat.pacing.redis_store import RedisStore

    async def main():
        store = RedisStore(sys.argv[1])
        print(time.time() - real_time(), await store.reserve(sys.argv[2], Limits(rpm=60), 1))
        await store.close()

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("offset", [3 * 3600.0, -3 * 3600.0])
async def test_a_host_with_a_skewed_clock_keeps_to_the_shared_budget(redis_url: str, offset: float) -> None:
    store = RedisStore(redis_url)
    try:
        assert await store.reserve(KEY, Limits(rpm=60), 1) == 0.0  # one a second: this one fills it
        done = subprocess.run(
            [sys.executable, "-c", SKEWED, redis_url, KEY, str(offset)],
            capture_output=True, text=True, timeout=60, cwd=ROOT, check=True,
        )
        skew, wait = map(float, done.stdout.split())
        assert skew == pytest.approx(offset, abs=1.0)
        # its clock says hours have passed (or not yet begun): the server's says it must wait its turn
        assert 0.0 < wait <= 1.0
        assert await store.reserve(KEY, Limits(rpm=60), 1) > 0.0
    finally:
        await store.close()


async def _all_of_redis(url: str) -> list[bytes]:
    """Every key and every value in the server, as bytes."""
    client = aioredis.Redis.from_url(url)
    found: list[bytes] = []
    try:
        async for name in client.scan_iter(match="*"):
            found.append(name)
            kind = (await client.type(name)).decode()
            if kind == "hash":
                for field, value in (await client.hgetall(name)).items():
                    found += [field, value]
            elif kind == "zset":
                found += [member for member, _ in await client.zrange(name, 0, -1, withscores=True)]
            elif kind == "string":
                found.append(await client.get(name))
            else:
                raise AssertionError(f"unexpected {kind} {name!r}")
    finally:
        await client.aclose()
    return found


async def test_neither_the_api_key_nor_the_model_is_ever_written(redis_url: str) -> None:
    store = RedisStore(redis_url)
    limits = Limits(rpm=600, tpm=60_000)
    try:
        for _ in range(5):
            await store.reserve(KEY, limits, 100)
        await store.adjust(KEY, limits, -40)
        await store.adjust_requests(KEY, limits, -1)
        await store.pause(KEY, limits, 0.5)
        await store.publish_limits(KEY, 500.0, 150_000.0)
        await store.register(KEY, "host1-4242", {"host": "host1", "pid": 4242})
        await store.heartbeat(KEY, "host1-4242")
        assert await store.reserve_spend(KEY, 10.0, 0.5)
        await store.settle_spend(KEY, 0.5, 0.25)
    finally:
        await store.close()
    stored = await _all_of_redis(redis_url)
    assert len(stored) > 10
    blob = b"\n".join(stored)
    assert KEY.encode() in blob  # the budget is there, under its hash
    for secret in (API_KEY, MODEL, BASE_URL, "127.0.0.1:1", "sk-"):
        assert secret.encode() not in blob, secret


async def test_an_idle_budget_expires_once_it_is_empty(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    store = RedisStore(redis_url, budget_keep=0.2)
    name = RedisStore.budget_key(KEY)
    try:
        # 1,000 tokens at 100 tokens/s: the budget is in debt for 10 s, and is kept that long plus 0.2 s
        assert await store.reserve(KEY, Limits(tpm=6_000), 1_000) == 0.0
        assert 9_000 < await client.pttl(name) <= 10_200
        # a cooldown is kept until it ends
        await store.pause(KEY, Limits(tpm=6_000), 30.0)
        assert await client.pttl(name) > 29_000
        await client.delete(name)
        # a budget goes soon after its last use once empty: primed full (500 requests at 1,000/s), 0.5 s + 0.2 s
        assert await store.reserve(KEY, Limits(rpm=60_000), 1) == 0.0
        assert 0 < await client.pttl(name) <= 700
        for _ in range(500):
            if not await client.exists(name):
                break
            await asyncio.sleep(0.01)
        assert not await client.exists(name)
        # process entries vanish with their TTL too
        await store.register(KEY, "p", {"host": "h"})
        assert 0 < await client.pttl(f"batchchat:{{{KEY}}}:procs") <= 30_000
    finally:
        await store.close()
        await client.aclose()


async def test_an_unreachable_server_raises_one_exception_without_the_password() -> None:
    port = free_port()
    store = RedisStore(f"redis://user:hunter2@127.0.0.1:{port}/0", socket_timeout=2.0)
    try:
        for call in (
            store.reserve(KEY, Limits(rpm=60), 1),
            store.adjust(KEY, Limits(rpm=60), 1),
            store.pause(KEY, Limits(rpm=60), 1.0),
            store.learned_limits(KEY),
            store.reserve_spend("cap", 1.0, 0.1),
            store.ping(),
        ):
            with pytest.raises(SharedStoreUnavailable) as caught:
                await call
            message = str(caught.value)
            assert f"127.0.0.1:{port}" in message
            assert "hunter2" not in message and "hunter2" not in repr(caught.value)
            assert caught.value.__cause__ is None and caught.value.__suppress_context__
    finally:
        await store.close()
    assert redact_url("redis://:pw@h:1/2") == "redis://:***@h:1/2"
    assert redact_url("redis://h:1/2") == "redis://h:1/2"


async def test_redis_lost_and_back_on_the_same_port(redis_server: RedisServer, redis_url: str) -> None:
    store = RedisStore(redis_url, socket_timeout=2.0)
    try:
        assert await store.reserve(KEY, Limits(rpm=600), 1) == 0.0
        redis_server.stop()
        with pytest.raises(SharedStoreUnavailable):
            await store.reserve(KEY, Limits(rpm=600), 1)
        redis_server.start()
        # the same store carries on: it reconnects, and loads its scripts again into the new server
        assert await store.reserve(KEY, Limits(rpm=600), 1) == 0.0
        assert await store.reserve(KEY, Limits(rpm=600), 1) > 0.0
    finally:
        await store.close()
        redis_server.start()


HAMMER = textwrap.dedent(
    """
    import asyncio, sys, time
    import redis.asyncio as aioredis
    from batchchat.pacing.bucket import Limits
    from batchchat.pacing.redis_store import RedisStore

    async def main():
        url, key, rpm, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
        store = RedisStore(url)
        limits = Limits(rpm=rpm, tpm=rpm * 10)
        admitted = 0
        signals = aioredis.Redis.from_url(url)
        await signals.rpush("test:ready", 1)
        await signals.blpop(["test:go"], timeout=60)  # every process starts at once
        end = time.monotonic() + seconds

        async def worker():
            nonlocal admitted
            while time.monotonic() < end:
                wait = await store.reserve(key, limits, 7)
                if wait == 0.0:
                    admitted += 1
                else:
                    await asyncio.sleep(min(wait, 0.002))

        await asyncio.gather(*(worker() for _ in range(8)))
        await signals.rpush("test:done", admitted)
        await signals.aclose()
        await store.close()

    asyncio.run(main())
    """
)


async def test_two_processes_hammering_one_budget_never_exceed_it(redis_url: str) -> None:
    rpm = 12_000.0  # 200 requests/s (and 2,000 tokens/s for 7 tokens each: requests bind), capacity 100
    seconds = 1.5
    procs = [
        subprocess.Popen([sys.executable, "-c", HAMMER, redis_url, KEY, str(rpm), str(seconds)], cwd=ROOT)
        for _ in range(2)
    ]
    signals = aioredis.Redis.from_url(redis_url)
    try:
        for _ in procs:
            assert await signals.blpop(["test:ready"], timeout=60) is not None, "a hammering process did not start"
        start = await _server_time(redis_url)
        await signals.rpush("test:go", 1, 1)
        counts = []
        for _ in procs:
            done = await signals.blpop(["test:done"], timeout=60)
            assert done is not None, "a hammering process did not finish"
            counts.append(int(done[1]))
        end = await _server_time(redis_url)
    finally:
        await signals.aclose()
        for proc in procs:
            proc.wait(timeout=60)
    assert all(proc.returncode == 0 for proc in procs)
    admitted = sum(counts)
    # primed: one request at once, then 200 a second by the server's clock, whoever asks
    assert admitted <= 1 + rpm / 60.0 * (end - start)
    # both drew on it, and together they kept it busy (each alone could go far faster)
    assert min(counts) > 0
    assert admitted >= 0.5 * rpm / 60.0 * seconds


async def test_a_shared_spending_cap_is_never_overspent(redis_url: str) -> None:
    stores = [RedisStore(redis_url) for _ in range(2)]
    try:
        results = await asyncio.gather(
            *(stores[i % 2].reserve_spend("fleet-cap", 1.0, 0.01) for i in range(300))
        )
        assert sum(results) == 100  # exactly $1.00 of $0.01 reservations, among 300 attempts from two clients
    finally:
        for store in stores:
            await store.close()
