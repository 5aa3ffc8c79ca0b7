"""Start a simulator in-process (own loop in a daemon thread) or as a child process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

import orjson

from batchchat.simulator.config import SimulatorConfig
from batchchat.simulator.models import DEFAULT_MODELS
from batchchat.simulator.server import SimulatorServer

__all__ = ["Simulator", "config_to_args", "new_event_loop", "serve_forever"]

READY_PREFIX = "batchchat simulator listening on "


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed, else the default asyncio loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def config_to_args(config: SimulatorConfig) -> list[str]:
    """The `python -m batchchat.simulator` flags that rebuild `config` (the clock cannot travel)."""
    args = ["--host", config.host, "--port", str(config.port), "--seed", str(config.seed)]
    if config.rpm is not None:
        args += ["--rpm", str(config.rpm)]
    if config.tpm is not None:
        args += ["--tpm", str(config.tpm)]
    args += ["--limit-window", repr(config.limit_window)]
    if not config.rate_limit_headers:
        args.append("--no-rate-limit-headers")
    for model, (rpm, tpm) in config.model_limits.items():
        args += ["--model-limit", f"{model}={'' if rpm is None else rpm},{'' if tpm is None else tpm}"]
    args += ["--limit-kind", config.limit_kind, "--retry-after-style", config.retry_after_style]
    args += ["--request-id-header", config.request_id_header]
    if tuple(config.models) != DEFAULT_MODELS:
        args += ["--models", ",".join(config.models)]
    if config.workers is not None:
        args += ["--workers", str(config.workers)]
    if config.api_key is not None:
        args += ["--api-key", config.api_key]
    args += ["--latency-ms", repr(config.latency_ms), "--ms-per-token", repr(config.ms_per_token)]
    args += ["--jitter", repr(config.jitter)]
    if config.latency_max_ms is not None:
        args += ["--latency-max-ms", repr(config.latency_max_ms)]
    for kind, rate in config.fault_rates.items():
        args += ["--fault", f"{kind}={rate!r}"]
    if config.fault_sequence:
        args += ["--fault-sequence", ",".join(config.fault_sequence)]
    if config.capacity is not None:
        args += ["--capacity", str(config.capacity)]
    if config.overload_at is not None:
        args += ["--overload-at", str(config.overload_at)]
    args += ["--default-max-tokens", str(config.default_max_tokens)]
    args += ["--answer-tokens", str(config.answer_tokens), "--embedding-dims", str(config.embedding_dims)]
    return args


def serve_forever(config: SimulatorConfig, announce: bool = True) -> None:
    """Run a simulator in this thread until SIGINT/SIGTERM; print the URL line when ready."""
    loop = new_event_loop()
    asyncio.set_event_loop(loop)

    async def main() -> None:
        server = SimulatorServer(config, loop)
        await server.start()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        if announce:
            print(READY_PREFIX + server.base_url, flush=True)
        try:
            await stop.wait()
        finally:
            await server.stop()

    try:
        loop.run_until_complete(main())
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()


class Simulator:
    """A running simulator: `base_url`, `stats()`, `reset_stats()`, `close()`; a context manager."""

    def __init__(self) -> None:
        self.base_url = ""
        self.port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: SimulatorServer | None = None
        self._stopped: asyncio.Event | None = None
        self._process: subprocess.Popen[str] | None = None
        self._root = ""

    # ---- in a thread ------------------------------------------------------------------------

    @classmethod
    def in_thread(cls, config: SimulatorConfig, timeout: float = 10.0) -> Simulator:
        """Start on its own event loop in a daemon thread; returns once listening."""
        sim = cls()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = new_event_loop()
            asyncio.set_event_loop(loop)
            sim._loop = loop

            async def main() -> None:
                server = SimulatorServer(config, loop)
                sim._stopped = asyncio.Event()
                try:
                    await server.start()
                except BaseException as exc:
                    failure.append(exc)
                    ready.set()
                    return
                sim._server = server
                sim._set_url(server.base_url, server.port)
                ready.set()
                await sim._stopped.wait()
                await server.stop()

            try:
                loop.run_until_complete(main())
            finally:
                loop.close()

        sim._thread = threading.Thread(target=run, name="batchchat-simulator", daemon=True)
        sim._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("simulator did not start in time")
        if failure:
            raise failure[0]
        return sim

    # ---- in a child process -----------------------------------------------------------------

    @classmethod
    def in_subprocess(cls, config: SimulatorConfig, cpu: int | None = None, timeout: float = 15.0) -> Simulator:
        """Start `python -m batchchat.simulator` with `config`'s flags, optionally pinned to `cpu`."""
        sim = cls()
        cmd = [sys.executable, "-m", "batchchat.simulator", *config_to_args(config)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # stderr goes to a file, not a pipe: the child can never block on it.
        with tempfile.TemporaryFile(mode="w+") as errors:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
            sim._process = proc
            if cpu is not None and hasattr(os, "sched_setaffinity"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(proc.pid, {cpu})
            line = _read_line(proc, timeout)
            if not line.startswith(READY_PREFIX):
                sim.close()
                errors.seek(0)
                raise RuntimeError(f"simulator failed to start: {line!r} {errors.read()[-2000:]}")
        url = line[len(READY_PREFIX) :].strip()
        sim._set_url(url, int(url.rsplit(":", 1)[1].split("/", 1)[0]))
        return sim

    # ---- common -----------------------------------------------------------------------------

    def _set_url(self, base_url: str, port: int) -> None:
        self.base_url = base_url
        self.port = port
        self._root = base_url[: -len("/v1")]

    def _call(self, coro_fn: Any) -> Any:
        assert self._loop is not None

        async def run() -> Any:
            return coro_fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def _http(self, method: str, path: str) -> Any:
        req = urllib.request.Request(self._root + path, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return orjson.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        """The same dict as `GET /stats`."""
        if self._server is not None:
            server = self._server
            return self._call(server.app.stats.snapshot)
        return self._http("GET", "/stats")

    def reset_stats(self) -> None:
        """Zero the stats (same as `POST /stats/reset`)."""
        if self._server is not None:
            self._call(self._server.app.reset_stats)
        else:
            self._http("POST", "/stats/reset")

    def close(self) -> None:
        """Stop promptly, dropping open connections (hung requests included). Idempotent."""
        if self._thread is not None:
            loop, stopped = self._loop, self._stopped
            if loop is not None and stopped is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(stopped.set)
            self._thread.join(5)
            self._thread = None
        if self._process is not None:
            proc = self._process
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
            self._process = None

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The child's first stdout line, or "" if it exits or stays silent past `timeout`."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline() if proc.stdout else ""))
    reader.daemon = True
    reader.start()
    deadline = time.monotonic() + timeout
    while reader.is_alive() and time.monotonic() < deadline:
        reader.join(0.05)
    return result[0] if result else ""
