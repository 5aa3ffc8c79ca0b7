"""`Reply`: what the simulator's app hands its connection to send (shared by the online and batch routes)."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["DROP", "HANG", "JSON", "NORMAL", "TRUNCATE", "Reply"]

NORMAL, DROP, HANG, TRUNCATE = 0, 1, 2, 3  # what the connection does: answer, close, never answer, send half
JSON = b"application/json"


class Reply(NamedTuple):
    """What to send: status, body, extra header lines (CRLF-terminated), content type, delay, action."""

    status: int
    body: bytes
    headers: bytes = b""
    ctype: bytes = JSON
    delay: float = 0.0
    action: int = NORMAL
