"""Load generator for the simulator: how many tiny chat requests/s can the server answer?

The client is a raw asyncio Protocol on uvloop with N keep-alive connections (one request in
flight per connection, no pipelining), pinned to one CPU; the server runs in a child process
pinned to another. Candidate stacks for comparison (`--server`):

- `raw`     : the simulator itself (`python -m batchchat.simulator`, httptools Protocol on uvloop)
- `uvicorn` : a bare ASGI app on uvicorn (httptools + uvloop) answering a fixed chat reply
- `aiohttp` : a bare aiohttp.web handler answering a fixed chat reply

    python benchmarks/simulator_load.py --server raw --connections 64 --requests 50000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time

import orjson

BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16})
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer sk-bench\r\n"
    b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
FIXED_REPLY = orjson.dumps(
    {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "lorem ipsum"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10},
    }
)


# ---- alternative servers (bare, for comparison of stacks) -------------------------------------


async def _asgi_app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(FIXED_REPLY))],
        }
    )
    await send({"type": "http.response.body", "body": FIXED_REPLY})


def serve_alternative(kind: str, port: int) -> None:
    """Run a bare comparison server on `port` (blocks)."""
    if kind == "uvicorn":
        import uvicorn

        print("ready", flush=True)
        uvicorn.run(
            _asgi_app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="error", access_log=False
        )
    elif kind == "aiohttp":
        import uvloop
        from aiohttp import web

        async def handler(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(body=FIXED_REPLY, content_type="application/json")

        application = web.Application()
        application.router.add_post("/v1/chat/completions", handler)
        uvloop.install()
        print("ready", flush=True)
        web.run_app(application, host="127.0.0.1", port=port, access_log=None, print=None)
    else:
        raise SystemExit(f"unknown server {kind}")


# ---- the client --------------------------------------------------------------------------------


class _Client(asyncio.Protocol):
    def __init__(self, state: dict[str, int], done: asyncio.Future[None]) -> None:
        self.state = state
        self.done = done
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._next()

    def _next(self) -> None:
        state = self.state
        if state["sent"] >= state["total"]:
            if self.transport is not None:
                self.transport.close()
            return
        state["sent"] += 1
        assert self.transport is not None
        self.transport.write(REQUEST)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            i = head.find(b"content-length:")
            length = int(head[i + 15 : head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None])
            total = end + 4 + length
            if len(self.buf) < total:
                return
            status = self.buf[9:12]
            self.buf = self.buf[total:]
            state = self.state
            state["done"] += 1
            if status != b"200":
                state["errors"] += 1
            if state["done"] >= state["total"] and not self.done.done():
                self.done.set_result(None)
            self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state["done"] < self.state["total"] and not self.done.done() and exc is not None:
            self.done.set_exception(exc)


async def run_load(port: int, connections: int, requests: int) -> tuple[float, int]:
    """Send `requests` over `connections` keep-alive connections; return (req/s, errors)."""
    loop = asyncio.get_running_loop()
    state = {"sent": 0, "done": 0, "total": requests, "errors": 0}
    done: asyncio.Future[None] = loop.create_future()
    started = time.perf_counter()
    transports = []
    for _ in range(connections):
        transport, _ = await loop.create_connection(lambda: _Client(state, done), "127.0.0.1", port)
        transports.append(transport)
    await asyncio.wait_for(done, 120)
    elapsed = time.perf_counter() - started
    for transport in transports:
        transport.close()
    return requests / elapsed, state["errors"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", choices=("raw", "uvicorn", "aiohttp"), default="raw")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--rpm", type=int, default=None, help="raw server only: also enforce this rpm")
    parser.add_argument("--serve-alternative", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_alternative:
        serve_alternative(args.serve_alternative, args.port)
        return

    port = _free_port()
    if args.server == "raw":
        cmd = [sys.executable, "-m", "batchchat.simulator", "--port", str(port)]
        if args.rpm:
            cmd += ["--rpm", str(args.rpm)]
    else:
        cmd = [sys.executable, __file__, "--serve-alternative", args.server, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        os.sched_setaffinity(proc.pid, {args.server_cpu})
        os.sched_setaffinity(0, {args.client_cpu})
        assert proc.stdout is not None
        proc.stdout.readline()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait until the port accepts
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        import uvloop

        rates = []
        for _ in range(args.runs):
            rate, errors = uvloop.run(run_load(port, args.connections, args.requests))
            rates.append(rate)
            print(f"{args.server}: {rate:,.0f} req/s ({errors} non-200)", flush=True)
        print(f"{args.server} c={args.connections} n={args.requests}: median {statistics.median(rates):,.0f} req/s")
    finally:
        proc.terminate()
        proc.wait(5)


if __name__ == "__main__":
    main()
