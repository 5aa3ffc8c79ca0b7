"""The seal of a finished output: what its state file records when a run leaves every line of its input done.

A cron job that reruns a finished job must know at once that there is nothing to do. The seal says: this output
(its device, inode, size and modification and change times to the nanosecond, as they were when the run ended)
holds every line of an input whose bytes had this SHA-256, planned under these defaults. A rerun whose output
is still exactly that file and whose input still has those bytes, under the same defaults, has nothing to do:
nothing failed, nothing changed, no line is torn, so neither the output needs reading nor the input parsing.
Anything else (an output appended to, compacted, edited or touched; another input; another --model or shard;
a run that failed any line or left any) goes the whole way: the resume index and the pre-scan.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

VERSION = 1  # a new one when what a seal vouches for changes (with output.lines.LINE_HASH_VERSION, say)


def seal_key(defaults: object, shard: object) -> str:
    """What besides the input's bytes makes the plan: the defaults applied to lines, and the shard."""
    return f"{VERSION} {defaults!r} {shard!r}"


def output_identity(output: Path) -> list[int] | None:
    """The output as the seal names it (None: it cannot be read)."""
    try:
        st = os.stat(output)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def file_digest(path: Path) -> str | None:
    """The SHA-256 of a file's bytes (None: it cannot be read)."""
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def make_seal(output: Path, input_sha256: str, key: str, lines: int) -> dict[str, Any] | None:
    """The seal of `output` as it is now, holding `lines` done lines of the input with that digest."""
    identity = output_identity(output)
    if identity is None:
        return None
    return {"version": VERSION, "key": key, "input_sha256": input_sha256, "lines": lines, "output": identity}


def sealed_lines(seal: Any, output: Path, input_path: Path, key: str) -> tuple[int, str] | None:
    """The number of done lines and the input's digest when `seal` holds for this output, input and key; else
    None."""
    if not isinstance(seal, dict) or seal.get("version") != VERSION or seal.get("key") != key:
        return None
    lines = seal.get("lines")
    if not isinstance(lines, int) or lines < 1 or seal.get("output") != output_identity(output):
        return None
    digest = seal.get("input_sha256")
    if not isinstance(digest, str) or digest != file_digest(input_path):
        return None
    return lines, digest
