"""What a reservation costs: `RedisStore` (one Lua round trip to a local redis-server over loopback) vs `LocalStore`.

Reservations per second, wall µs per reservation and client CPU µs per reservation, from one asyncio process,
with sequential awaits and with 64 concurrent tasks (and a few connection-pool sizes). Limits are set high so
that every reservation is admitted: the cost of the common path. The server runs on its own core, the client
on another, as in the other benchmarks.

    python -m benchmarks.bench_redis_store [--quick] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator

from batchchat.pacing.bucket import Limits
from batchchat.pacing.redis_store import RedisStore, namespace
from batchchat.pacing.store import BudgetStore, LocalStore
from benchmarks.common import CLIENT_CPU, SERVER_CPU, cpu_model, version

LIMITS = Limits(rpm=1e12, tpm=1e15)  # never binding: every reservation is admitted
KEY = namespace("sk-bench-0000", "http://127.0.0.1:1/v1", "gpt-4o-mini")


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server on a free loopback port, pinned to the server core; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (make test installs it; or apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    directory = tempfile.mkdtemp(prefix="batchchat-bench-redis-")
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", directory]
    if shutil.which("taskset"):
        command = ["taskset", "-c", str(SERVER_CPU), *command]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


async def _measure(store: BudgetStore, n: int, tasks: int, settle: bool) -> tuple[float, float, float]:
    """(reservations/s, wall µs per reservation, client CPU µs per reservation) for `n` in `tasks` tasks.

    `settle`: each reservation is followed by an `adjust` (a request's settle: two round trips a request).
    """
    for _ in range(200):  # warm: connections open, scripts loaded
        await store.reserve(KEY, LIMITS, 100)
    each = n // tasks

    async def worker() -> None:
        for _ in range(each):
            if await store.reserve(KEY, LIMITS, 100) != 0.0:
                raise AssertionError("a reservation waited: the limits are meant never to bind")
            if settle:
                await store.adjust(KEY, LIMITS, -40)

    cpu, wall = time.process_time(), time.perf_counter()
    if tasks == 1:
        await worker()
    else:
        await asyncio.gather(*(worker() for _ in range(tasks)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    done = each * tasks
    return done / wall, wall / done * 1e6, cpu / done * 1e6


def _best(runs: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """The median run by throughput."""
    return sorted(runs)[len(runs) // 2]


async def bench(url: str, n: int, repeat: int) -> list[tuple[str, int, tuple[float, float, float]]]:
    rows = []
    cases: list[tuple[str, int, bool, Callable[[], BudgetStore]]] = [
        ("LocalStore", 1, False, LocalStore),
        ("LocalStore", 64, False, LocalStore),
        ("LocalStore reserve+adjust", 64, True, LocalStore),
        ("RedisStore", 1, False, lambda: RedisStore(url)),
        ("RedisStore", 64, False, lambda: RedisStore(url)),
        ("RedisStore", 1024, False, lambda: RedisStore(url)),
        ("RedisStore, 16 connections", 64, False, lambda: RedisStore(url, max_connections=16)),
        ("RedisStore reserve+adjust", 64, True, lambda: RedisStore(url)),
    ]
    for name, tasks, settle, make in cases:
        runs = []
        for _ in range(repeat):
            store = make()
            try:
                count = n if name.startswith("Redis") else n * 10
                runs.append(await _measure(store, count, tasks, settle))
            finally:
                await _close(store.close())
        rows.append((name, tasks, _best(runs)))
    return rows


async def _close(closing: Awaitable[None]) -> None:
    await closing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer reservations, one run per case")
    parser.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    args = parser.parse_args()
    n, repeat = (5_000, 1) if args.quick else (20_000, 3)
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {CLIENT_CPU})
    with redis_server() as url:
        if args.uvloop:
            import uvloop

            rows = uvloop.run(bench(url, n, repeat))
        else:
            rows = asyncio.run(bench(url, n, repeat))
        server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    loop = "uvloop" if args.uvloop else "asyncio"
    print(f"{cpu_model()}; {' '.join(server[:3])}; redis-py {version('redis')}; {loop}; "
          f"client on CPU {CLIENT_CPU}, server on CPU {SERVER_CPU}; median of {repeat} run(s)")
    print("(RedisStore: 64 connections unless said; reserve+adjust: figures per reservation, each with its settle)")
    print(f"{'store':30} {'tasks':>5} {'reservations/s':>15} {'wall µs each':>13} {'client CPU µs each':>19}")
    for name, tasks, (rate, wall_us, cpu_us) in rows:
        print(f"{name:30} {tasks:>5} {rate:>15,.0f} {wall_us:>13.1f} {cpu_us:>19.1f}")


if __name__ == "__main__":
    main()
