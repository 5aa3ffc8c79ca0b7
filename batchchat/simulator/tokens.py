"""The simulator's token rules: simple, documented, and cheap.

Text tokens: ``text_tokens(s) = ceil(len(s) / 4)`` (characters, not bytes); a list of integers
(pre-tokenised input) counts one token per integer.

Prompt tokens:
- chat: ``3 + sum(4 + text_tokens(content) for each message)``; content may be a string, null,
  or a list of parts whose ``text`` fields are counted (other parts, e.g. images, count 85).
- responses: the same rule over ``instructions`` (as one message) and ``input`` (a string is one
  message; a list is one message per item).
- completions and embeddings: ``sum(text_tokens(item))`` over the prompt / input items.

Completion tokens, per choice: ``min(cap, 1 + h % answer_tokens)`` where h is a 64-bit hash of
(seed, the canonical request body, choice index) and cap is ``max_completion_tokens`` /
``max_tokens`` (responses: ``max_output_tokens``), or ``default_max_tokens`` when none is given.
So a given body under a given seed always gets the same answer length, never above its cap.

Charge at admission (what the tpm bucket takes): ``prompt_tokens + cap x n`` (completions: x the
number of prompts too); embeddings charge their prompt tokens only. No refund afterwards.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

__all__ = [
    "body_hash",
    "choice_tokens",
    "filler",
    "input_items_tokens",
    "message_tokens",
    "text_tokens",
]

_MASK = (1 << 64) - 1
IMAGE_TOKENS = 85


def text_tokens(text: str) -> int:
    """ceil(len(text) / 4)."""
    return (len(text) + 3) >> 2


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return (len(content) + 3) >> 2
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                total += text_tokens(text) if isinstance(text, str) else IMAGE_TOKENS
            elif isinstance(part, str):
                total += text_tokens(part)
        return total
    return 0


def message_tokens(messages: list[Any]) -> int:
    """Prompt tokens of a chat `messages` list: 3 + Σ(4 + content tokens)."""
    total = 3
    for message in messages:
        total += 4 + _content_tokens(message.get("content"))
    return total


def responses_tokens(body: dict[str, Any]) -> int:
    """Prompt (input) tokens of a Responses API request."""
    total = 3
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        total += 4 + text_tokens(instructions)
    data = body["input"]
    if isinstance(data, str):
        return total + 4 + text_tokens(data)
    for item in data:
        if isinstance(item, dict):
            total += 4 + _content_tokens(item.get("content", item.get("text")))
        else:
            total += 4 + _content_tokens(item)
    return total


def input_items_tokens(data: Any) -> int:
    """Tokens of a completions prompt / embeddings input: str, [str], [int] or [[int]]."""
    if isinstance(data, str):
        return text_tokens(data)
    total = 0
    for item in data:
        if isinstance(item, str):
            total += text_tokens(item)
        elif isinstance(item, list):
            total += len(item)
        else:
            total += 1
    return total


def body_hash(seed: int, body: dict[str, Any]) -> int:
    """A 64-bit hash of (seed, canonical JSON of body)."""
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.blake2b(canonical, digest_size=8, key=seed.to_bytes(8, "little", signed=True))
    return int.from_bytes(digest.digest(), "little")


def choice_tokens(h: int, index: int, answer_tokens: int, cap: int) -> int:
    """Completion tokens of choice `index`: min(cap, 1 + mix(h, index) % answer_tokens)."""
    if index:
        x = (h + index * 0x9E3779B97F4A7C15) & _MASK
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
        h = x ^ (x >> 31)
    n = 1 + h % answer_tokens
    return n if n < cap else cap


_WORDS = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
]
_FILLER: dict[int, str] = {}


def filler(count: int) -> str:
    """`count` filler words (one per completion token), cached by count."""
    text = _FILLER.get(count)
    if text is None:
        words = _WORDS
        text = " ".join(words[i % len(words)] for i in range(count))
        if len(_FILLER) < 8192:
            _FILLER[count] = text
    return text
