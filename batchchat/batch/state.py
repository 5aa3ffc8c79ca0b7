"""The state of a Batch API run, kept beside the output (`OUTPUT.batch.json`) with its chunk files in a work
directory (`OUTPUT.batch/`).

The state is written crash-safely (a temporary file, fsync, rename, fsync of the directory) before every
step that buys something: an intent ("uploading", "creating") before the call, the id the provider gave
right after. So a crash at any moment leaves either the id, or an intent that a rerun resolves by listing
the provider's files and batches (a chunk's upload name and a batch's metadata are unique to the run).
It holds no secret: ids, names, counts, never the key.

A chunk moves: ready -> uploading -> uploaded -> creating -> submitted -> collecting -> done. A chunk is
uploaded at most once and gets at most one batch; lines sent again (an expired batch, a rejected one) go
into a new chunk.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchchat.errors import UsageError

VERSION = 1
OPEN_STATUSES = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
TERMINAL_STATUSES = frozenset({"completed", "expired", "cancelled", "failed"})


@dataclass(slots=True)
class Chunk:
    """One batch file: its lines (in the work directory), where it is in its life, and the provider's ids."""

    n: int
    endpoint: str
    model: str
    requests: int
    bytes: int
    tokens: int  # the estimate of its prompt tokens: what it adds to the model's enqueued-token queue
    phase: str = "ready"
    kind: str = "batch"  # or "online": lines sent through the online path (--fallback online)
    parent: int | None = None  # the chunk whose unfinished lines this one holds
    file_id: str | None = None
    batch_id: str | None = None
    status: str | None = None  # the batch's last known status
    counts: dict[str, int] = field(default_factory=dict)  # request_counts at the last poll
    collect_from: int | None = None  # the output's size before this chunk's lines were written
    note: str | None = None  # why it ended as it did (a failure's reason)
    submitted_at: float | None = None

    @property
    def name(self) -> str:
        """The chunk's file name in the work directory."""
        return f"chunk-{self.n:05d}.jsonl"

    @property
    def index_name(self) -> str:
        """The chunk's index: per line, its custom_id, input line number and metadata."""
        return f"chunk-{self.n:05d}.index.jsonl"

    @property
    def open(self) -> bool:
        """Submitted and not yet collected."""
        return self.phase == "submitted"


@dataclass(slots=True)
class BatchState:
    """Everything a rerun needs to continue a Batch API run."""

    path: Path
    input: str
    run_tag: str = field(default_factory=lambda: secrets.token_hex(6))
    created: float = field(default_factory=time.time)
    chunks: list[Chunk] = field(default_factory=list)
    split_done: bool = False
    token_limits: dict[str, int] = field(default_factory=dict)  # learned enqueued-token limits per model
    token_ratio: dict[str, float] = field(default_factory=dict)  # provider's prompt tokens / our estimate
    fallback: str = "resubmit"

    @property
    def work_dir(self) -> Path:
        """Where the chunk files live."""
        return self.path.with_name(self.path.name[: -len(".json")])

    def upload_name(self, chunk: Chunk) -> str:
        """The name a chunk is uploaded under: unique to this run, free of anything secret."""
        return f"batchchat-{self.run_tag}-{chunk.n:05d}.jsonl"

    def metadata(self, chunk: Chunk) -> dict[str, str]:
        """The metadata a chunk's batch is created with: names the run, the chunk and the input."""
        return {"batchchat_run": self.run_tag, "batchchat_chunk": str(chunk.n),
                "batchchat_input": Path(self.input).name[:500]}

    def next_n(self) -> int:
        """The number of the next new chunk."""
        return max((c.n for c in self.chunks), default=0) + 1

    def save(self) -> None:
        """Write the state crash-safely: temp file, fsync, rename, fsync the directory."""
        data = {
            "version": VERSION,
            "input": self.input,
            "run_tag": self.run_tag,
            "created": self.created,
            "split_done": self.split_done,
            "token_limits": self.token_limits,
            "token_ratio": self.token_ratio,
            "fallback": self.fallback,
            "chunks": [asdict(c) for c in self.chunks],
        }
        write_atomic(self.path, orjson.dumps(data, option=orjson.OPT_INDENT_2))

    @classmethod
    def load(cls, path: Path) -> BatchState | None:
        """The state at `path`, or None when there is none."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = orjson.loads(raw)
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            chunks = [Chunk(**c) for c in data["chunks"]]
            return cls(path, data["input"], data["run_tag"], data["created"], chunks, data["split_done"],
                       data.get("token_limits", {}), data.get("token_ratio", {}), data.get("fallback", "resubmit"))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{path}: not a batchchat batch state file ({exc}); remove it to start over") from None


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: a crash leaves the old file or the new one, whole."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory if str(directory) else ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def state_path(output: Path) -> Path:
    """`OUTPUT.batch.json` beside the output."""
    return output.with_name(output.name + ".batch.json")


def describe_chunk(chunk: Chunk) -> dict[str, Any]:
    """A chunk for a person (`batchchat cancel` and logs)."""
    return {"chunk": chunk.n, "model": chunk.model, "requests": chunk.requests, "batch": chunk.batch_id,
            "status": chunk.status}
