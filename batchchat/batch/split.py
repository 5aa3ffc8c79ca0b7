"""Split the plan's lines into Batch API files: one endpoint and one model per file, at most `max_requests`
lines and `max_bytes` bytes each (and 50,000 embedding inputs), streamed to disk a line at a time.

Beside each chunk file, an index file keeps what the Batch API does not carry back: each line's input line
number, metadata and estimated prompt tokens. Lines the Batch API cannot take become error results before
anything is uploaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from batchchat.batch.state import Chunk
from batchchat.config.settings import EMBEDDINGS, RunSettings
from batchchat.input.parse import InvalidLine, Job
from batchchat.input.plan import Plan, iter_pending
from batchchat.output.lines import Result
from batchchat.pacing.tokens import prompt_estimate

MAX_EMBEDDING_INPUTS = 50_000


@dataclass(frozen=True, slots=True)
class Limits:
    """What one batch file may hold."""

    max_requests: int = 50_000
    max_bytes: int = 200_000_000
    max_tokens: int | None = None  # enqueued prompt tokens, once a limit is known
    max_inputs: int = MAX_EMBEDDING_INPUTS


class _Open:
    """A chunk being written."""

    __slots__ = ("chunk", "data", "index", "inputs")

    def __init__(self, chunk: Chunk, work_dir: Path) -> None:
        self.chunk = chunk
        self.data: IO[bytes] = (work_dir / chunk.name).open("wb")
        self.index: IO[bytes] = (work_dir / chunk.index_name).open("wb")
        self.inputs = 0

    def close(self) -> None:
        for handle in (self.data, self.index):
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()


class ChunkWriter:
    """Routes lines to the open chunk of their (endpoint, model), starting a new one when a limit is reached."""

    def __init__(self, work_dir: Path, limits: Limits, first_n: int, parent: int | None = None) -> None:
        self._dir = work_dir
        self._limits = limits
        self._next = first_n
        self._parent = parent
        self._open: dict[tuple[str, str], _Open] = {}
        self.chunks: list[Chunk] = []

    def too_large(self, line: bytes) -> str | None:
        """Why a line can never fit a batch file, or None."""
        if len(line) > self._limits.max_bytes:
            return f"the request is {len(line):,} bytes; a batch file may hold at most {self._limits.max_bytes:,}"
        return None

    def add(self, endpoint: str, model: str, line: bytes, index: bytes, tokens: int, inputs: int) -> None:
        """Append one batch line (and its index line) to the chunk of its endpoint and model."""
        key = (endpoint, model)
        current = self._open.get(key)
        limits = self._limits
        if current is not None:
            c = current.chunk
            full = (c.requests + 1 > limits.max_requests or c.bytes + len(line) > limits.max_bytes
                    or (limits.max_tokens is not None and c.requests and c.tokens + tokens > limits.max_tokens)
                    or (endpoint == EMBEDDINGS and current.inputs + inputs > limits.max_inputs))
            if full:
                current.close()
                current = None
        if current is None:
            chunk = Chunk(self._next, endpoint, model, 0, 0, 0, parent=self._parent)
            self._next += 1
            self.chunks.append(chunk)
            current = self._open[key] = _Open(chunk, self._dir)
        current.data.write(line)
        current.index.write(index)
        current.inputs += inputs
        chunk = current.chunk
        chunk.requests += 1
        chunk.bytes += len(line)
        chunk.tokens += tokens

    def close(self) -> list[Chunk]:
        """Close every open chunk: the chunks written, in order."""
        for current in self._open.values():
            current.close()
        self._open.clear()
        return self.chunks


def batch_line(job: Job) -> bytes:
    """The Batch API input line of a job."""
    return orjson.dumps({"custom_id": job.custom_id, "method": "POST", "url": job.url, "body": job.body},
                        option=orjson.OPT_APPEND_NEWLINE)


def index_line(job: Job, tokens: int) -> bytes:
    """The index line of a job: its id, input line number, metadata and prompt-token estimate."""
    entry: dict[str, Any] = {"id": job.custom_id, "line": job.line_no, "t": tokens}
    if job.metadata is not None:
        entry["m"] = job.metadata
    return orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)


def _inputs(job: Job) -> int:
    value = job.body.get("input")
    return len(value) if job.url == EMBEDDINGS and isinstance(value, list) else 1


def split_plan(plan: Plan, settings: RunSettings, work_dir: Path, limits: Limits, first_n: int,
               reject: Callable[[Result], None]) -> list[Chunk]:
    """Write the plan's valid lines into chunk files; hand every line the Batch API cannot take to `reject`."""
    writer = ChunkWriter(work_dir, limits, first_n)
    try:
        for item in iter_pending(plan, settings.defaults):
            line_no = item.line_no
            if isinstance(item, InvalidLine):
                reject(Result(item.custom_id, line_no, error_code="invalid_request",
                              error_message=item.describe(plan.display)))
                continue
            line = batch_line(item)
            why = writer.too_large(line)
            if why is not None:
                reject(Result(item.custom_id, line_no, error_code="request_too_large", metadata=item.metadata,
                              error_message=f"{plan.display}:{line_no}: {why}"))
                continue
            tokens = prompt_estimate(item)
            writer.add(item.url, str(item.body["model"]), line, index_line(item, tokens), tokens, _inputs(item))
    finally:
        chunks = writer.close()
    return chunks


def read_index(path: Path) -> Iterator[dict[str, Any]]:
    """The index lines of a chunk, in file order."""
    with path.open("rb") as handle:
        for raw in handle:
            yield orjson.loads(raw)


def read_pairs(work_dir: Path, chunk: Chunk) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """A chunk's (batch line, index entry) pairs, in file order."""
    with (work_dir / chunk.name).open("rb") as data:
        for entry in read_index(work_dir / chunk.index_name):
            yield data.readline(), entry


def rechunk(work_dir: Path, source: Chunk, keep: Iterable[str] | None, limits: Limits, first_n: int) -> list[Chunk]:
    """New chunks holding the lines of `source` whose id is in `keep` (None: all), within `limits`."""
    wanted = None if keep is None else set(keep)
    writer = ChunkWriter(work_dir, limits, first_n, parent=source.n)
    try:
        for line, entry in read_pairs(work_dir, source):
            if wanted is not None and entry["id"] not in wanted:
                continue
            inputs = 1
            if source.endpoint == EMBEDDINGS:
                value = orjson.loads(line)["body"].get("input")
                inputs = len(value) if isinstance(value, list) else 1
            writer.add(source.endpoint, source.model, line, orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE),
                       int(entry.get("t", 0)), inputs)
    finally:
        chunks = writer.close()
    return chunks
