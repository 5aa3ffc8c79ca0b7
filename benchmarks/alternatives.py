"""The client loops compared, each run alone in its own pinned process: `python -m benchmarks.alternatives SPEC`.

SPEC is JSON: {"client": "batchchat" | "openai" | "httpx" | "aiohttp", "input", "output", "base_url",
"concurrency", and for batchchat "rpm"/"tpm"}. The hand-written loops are what a careful user would write
in an afternoon: read the JSONL lazily, one task per request behind an `asyncio.Semaphore`, parse each answer;
they do not write results, rate-limit or retry (batchchat does all three). Every loop runs on uvloop, like
batchchat. Prints one JSON line: elapsed seconds and CPU seconds of the work alone (imports excluded), the
request counts, and peak RSS.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from benchmarks.common import API_KEY


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _runner() -> asyncio.Runner:
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


async def _drive(path: str, concurrency: int, send: Callable[[dict[str, Any]], Awaitable[bool]]) -> tuple[int, int]:
    """Send every line's body through `send`, at most `concurrency` at once; returns (ok, failed)."""
    sem = asyncio.Semaphore(concurrency)
    counts = [0, 0]
    tasks: set[asyncio.Task[None]] = set()

    async def one(body: dict[str, Any]) -> None:
        try:
            counts[0 if await send(body) else 1] += 1
        except Exception:
            counts[1] += 1
        finally:
            sem.release()

    with open(path, "rb") as lines:
        for raw in lines:
            body = orjson.loads(raw)["body"]
            await sem.acquire()
            task = asyncio.create_task(one(body))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks))
    return counts[0], counts[1]


async def openai_loop(spec: dict[str, Any]) -> tuple[int, int]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=spec["base_url"], api_key=API_KEY, max_retries=2, timeout=600.0)

    async def send(body: dict[str, Any]) -> bool:
        completion = await client.chat.completions.create(**body)
        return bool(completion.choices)

    try:
        return await _drive(spec["input"], spec["concurrency"], send)
    finally:
        await client.close()


async def httpx_loop(spec: dict[str, Any]) -> tuple[int, int]:
    import httpx

    c = spec["concurrency"]
    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
    url = spec["base_url"] + "/chat/completions"
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(600.0, pool=None), headers=headers) as client:
        async def send(body: dict[str, Any]) -> bool:
            response = await client.post(url, content=orjson.dumps(body))
            orjson.loads(response.content)
            return response.status_code == 200

        return await _drive(spec["input"], c, send)


async def aiohttp_loop(spec: dict[str, Any]) -> tuple[int, int]:
    import aiohttp

    c = spec["concurrency"]
    headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
    url = spec["base_url"] + "/chat/completions"
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c), headers=headers,
                                     timeout=timeout) as session:
        async def send(body: dict[str, Any]) -> bool:
            async with session.post(url, data=orjson.dumps(body)) as response:
                orjson.loads(await response.read())
                return response.status == 200

        return await _drive(spec["input"], c, send)


def batchchat_run(spec: dict[str, Any]) -> tuple[int, int]:
    import batchchat

    summary = batchchat.run(spec["input"], spec["output"], base_url=spec["base_url"], api_key=API_KEY,
                            concurrency=spec["concurrency"], rpm=spec.get("rpm"), tpm=spec.get("tpm"),
                            progress="off", transport=spec.get("transport"))
    return summary.succeeded, summary.failed


LOOPS = {"openai": openai_loop, "httpx": httpx_loop, "aiohttp": aiohttp_loop}


def main(argv: list[str]) -> None:
    spec = json.loads(argv[1])
    name = spec["client"]
    if name == "batchchat":
        import batchchat  # noqa: F401  (imports are not part of the measured work)
        work: Callable[[], tuple[int, int]] = lambda: batchchat_run(spec)  # noqa: E731
    else:
        loop = LOOPS[name]
        __import__({"openai": "openai", "httpx": "httpx", "aiohttp": "aiohttp"}[name])
        runner = _runner()
        work = lambda: runner.run(loop(spec))  # noqa: E731
    cpu0, t0 = _cpu(), time.perf_counter()
    ok, failed = work()
    elapsed, cpu = time.perf_counter() - t0, _cpu() - cpu0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"client": name, "elapsed": elapsed, "cpu": cpu, "ok": ok, "failed": failed,
                      "maxrss_mb": ru.ru_maxrss / 1024}), flush=True)


if __name__ == "__main__":
    main(sys.argv)
