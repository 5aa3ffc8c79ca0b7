"""Collect a finished batch: turn the provider's output and error files into batchchat output lines.

Every line of the chunk ends as exactly one of: a result line written to the output (an answer, or an error
the provider gave), or an unfinished id (expired, cancelled, never run) that the caller sends again. A line
missing from both files of a `completed` batch is an error line, never dropped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchchat.batch.split import read_index
from batchchat.batch.state import Chunk
from batchchat.output.lines import Result, encode_result
from batchchat.output.writer import ResultWriter

NOT_RUN_CODES = frozenset({"batch_expired", "batch_cancelled"})
WRITE_LINES = 1024


@dataclass(slots=True)
class Collected:
    """What collecting a chunk gave: lines written (ok and failed), the ids still to do, tokens used."""

    succeeded: int = 0
    failed: int = 0
    unfinished: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0


def result_of(line: dict[str, Any], entry: dict[str, Any], attempts: int = 1) -> Result:
    """A provider's output or error file line as a batchchat `Result` (line number and metadata from the index)."""
    custom_id = line["custom_id"]
    response = line.get("response")
    error = line.get("error")
    line_no, metadata = entry["line"], entry.get("m")
    if isinstance(response, dict):
        status = response.get("status_code")
        body = response.get("body")
        raw = orjson.dumps(body) if body is not None else None
        ok = isinstance(status, int) and 200 <= status < 300 and not error
        if ok:
            usage = body.get("usage") if isinstance(body, dict) else None
            return Result(custom_id, line_no, status, raw, response.get("request_id"), attempts=attempts,
                          usage=usage if isinstance(usage, dict) else None, metadata=metadata)
        code, message = _error_fields(body, error)
        return Result(custom_id, line_no, status if isinstance(status, int) else None, raw,
                      response.get("request_id"), error_code=code or f"http_{status}",
                      error_message=message or f"the batch answered {status}", attempts=attempts, metadata=metadata)
    code, message = _error_fields(None, error)
    return Result(custom_id, line_no, error_code=code or "batch_error", error_message=message or "no response",
                  attempts=attempts, metadata=metadata)


def _error_fields(body: Any, error: Any) -> tuple[str | None, str | None]:
    for source in (error, body.get("error") if isinstance(body, dict) else None):
        if isinstance(source, dict):
            code = source.get("code") or source.get("type")
            return (str(code) if code else None), (str(source.get("message")) if source.get("message") else None)
    return None, None


class ChunkCollector:
    """Writes one chunk's results to the output, one line per id, and says which ids are left to do."""

    def __init__(self, writer: ResultWriter, count: Callable[[Result, bytes, str], None]) -> None:
        self._writer = writer
        self._count = count

    def collect(self, work_dir: Path, chunk: Chunk, files: list[Path], status: str, resend: bool,
                missing_error: tuple[str, str] | None, attempts: int) -> Collected:
        """Read `files` (output then error file, batchchat-shaped lines for an online chunk) against the chunk's
        index. Lines the batch did not run (expired, cancelled, missing when the batch did not complete) are
        returned as unfinished when `resend`, else written as errors; `missing_error` (code, message) is
        written for every line missing from both files when given."""
        index = {entry["id"]: entry for entry in read_index(work_dir / chunk.index_name)}
        out = Collected()
        pending: list[bytes] = []
        for path in files:
            with path.open("rb") as handle:
                for raw in handle:
                    if not raw.strip():
                        continue
                    line = orjson.loads(raw)
                    entry = index.pop(line.get("custom_id"), None)
                    if entry is None:
                        continue  # not ours, or a second answer for an id already written: one line per id
                    if chunk.kind == "online":
                        result = _online_result(line, entry)
                        line_id = line.get("id") or ""
                    else:
                        result = result_of(line, entry, attempts)
                        line_id = line.get("id") or ""
                        if not result.ok and result.error_code in NOT_RUN_CODES and resend:
                            out.unfinished.append(result.custom_id)
                            continue
                    self._add(result, line_id, pending, out)
        for custom_id, entry in index.items():  # in neither file
            if resend and missing_error is None:
                out.unfinished.append(custom_id)
                continue
            code, message = missing_error or (f"batch_{status}", f"the batch ended {status} without running this line")
            result = Result(custom_id, entry["line"], error_code=code, error_message=message, attempts=attempts,
                            metadata=entry.get("m"))
            self._add(result, "", pending, out)
        self._flush(pending)
        self._sync()
        return out

    def _add(self, result: Result, line_id: str, pending: list[bytes], out: Collected) -> None:
        line = encode_result(result, line_id or f"batch_req_{result.custom_id}")
        pending.append(line)
        if result.ok:
            out.succeeded += 1
        else:
            out.failed += 1
        self._count(result, line, line_id)
        if len(pending) >= WRITE_LINES:
            self._flush(pending)

    def _flush(self, pending: list[bytes]) -> None:
        if pending:
            self._writer.write(b"".join(pending), time.monotonic())
            pending.clear()

    def _sync(self) -> None:
        fd = os.open(self._writer.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _online_result(line: dict[str, Any], entry: dict[str, Any]) -> Result:
    """A line of the online fallback's own output, with the input's line number and metadata put back."""
    response = line.get("response")
    error = line.get("error")
    status = raw = request_id = None
    if isinstance(response, dict):
        status = response.get("status_code")
        request_id = response.get("request_id")
        body = response.get("body")
        raw = orjson.dumps(body) if body is not None else None
    code = message = None
    if isinstance(error, dict):
        code, message = error.get("code") or "error", error.get("message")
    return Result(line["custom_id"], entry["line"], status, raw, request_id, error_code=code, error_message=message,
                  attempts=int(line.get("attempts") or 0), latency=float(line.get("latency_ms") or 0) / 1000.0,
                  usage=line.get("usage"), metadata=entry.get("m"))
