"""Compaction: after a rerun retried failed ids, keep one line per id (the last), crash-safely."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import orjson


def compact(path: Path, retried: set[str]) -> int:
    """Keep only the last line of each id in `retried`; returns the number of lines removed.

    Earlier runs' error lines for ids that were tried again are superseded; the output then holds one line
    per id. The file is rewritten beside itself and renamed over, so a crash here leaves the old one whole.
    """
    if not retried:
        return 0
    remaining: dict[str, int] = {}
    for custom_id in _ids(path):
        if custom_id in retried:
            remaining[custom_id] = remaining.get(custom_id, 0) + 1
    if all(count <= 1 for count in remaining.values()):
        return 0
    removed = 0
    tmp = path.with_name(path.name + ".compact")
    with path.open("rb") as src, tmp.open("wb") as dst:
        for raw in src:
            custom_id = orjson.loads(raw)["custom_id"]
            if custom_id in remaining:
                remaining[custom_id] -= 1
                if remaining[custom_id] > 0:
                    removed += 1
                    continue
            dst.write(raw)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)
    return removed


def _ids(path: Path) -> Iterator[str]:
    with path.open("rb") as handle:
        for raw in handle:
            yield orjson.loads(raw)["custom_id"]


