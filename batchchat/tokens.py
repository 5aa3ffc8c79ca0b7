"""Estimate what a request will be charged against the token budget before it is sent.

The provider's rule (OpenAI's, and the simulator's): a request costs its prompt tokens plus its completion
cap (`max_tokens` × `n`) when it is admitted. The prompt is estimated from its characters (about four to a
token, plus a few tokens of framing per message); the real `prompt_tokens` of each answer settle the difference.
"""

from __future__ import annotations

from typing import Any

from batchchat.jobs import CHAT, COMPLETIONS, EMBEDDINGS, MAX_TOKENS_FIELDS, RESPONSES, Job

CHARS_PER_TOKEN = 4.0
TOKENS_PER_MESSAGE = 4
REPLY_PRIMING_TOKENS = 3
# The completion cap charged for a request that names none: a guess, settled by the real usage.
DEFAULT_COMPLETION_CAP = 256


def _text_chars(value: Any) -> int:
    """Characters of text in a content value: a string, or OpenAI's array of parts."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        total = 0
        for part in value:
            if isinstance(part, str):
                total += len(part)
            elif isinstance(part, dict):
                text = part.get("text") or part.get("content")
                total += _text_chars(text) if text is not None else 0
            elif isinstance(part, list):
                total += len(part)  # a list of token ids: one token each, counted as chars below
        return total
    return 0


def prompt_estimate(job: Job, chars_per_token: float = CHARS_PER_TOKEN) -> int:
    """Estimated prompt tokens of a job."""
    body = job.body
    if job.url == CHAT:
        messages = body.get("messages") or []
        chars = sum(_text_chars(m.get("content")) for m in messages if isinstance(m, dict))
        return int(chars / chars_per_token + 0.999) + TOKENS_PER_MESSAGE * len(messages) + REPLY_PRIMING_TOKENS
    if job.url == EMBEDDINGS:
        return int(_text_chars(body.get("input")) / chars_per_token + 0.999) or 1
    if job.url == COMPLETIONS:
        return int(_text_chars(body.get("prompt")) / chars_per_token + 0.999) or 1
    if job.url == RESPONSES:
        value = body.get("input")
        chars = _text_chars(value) if not isinstance(value, list) else sum(
            _text_chars(m.get("content")) if isinstance(m, dict) else _text_chars(m) for m in value
        )
        chars += _text_chars(body.get("instructions"))
        return int(chars / chars_per_token + 0.999) + REPLY_PRIMING_TOKENS
    return 1


def completion_cap(job: Job) -> int:
    """The completion tokens charged up front: the cap × n (0 for embeddings)."""
    if job.url == EMBEDDINGS:
        return 0
    cap = DEFAULT_COMPLETION_CAP
    for field in MAX_TOKENS_FIELDS[job.url]:
        if field in job.body:
            cap = job.body[field]
            break
    return cap * job.body.get("n", 1)


def charged_tokens(usage: dict[str, Any] | None) -> int | None:
    """The prompt tokens of a response's usage, in any of OpenAI's shapes; None when absent."""
    if not isinstance(usage, dict):
        return None
    value = usage.get("prompt_tokens", usage.get("input_tokens"))
    return value if isinstance(value, int) else None


def usage_totals(usage: dict[str, Any] | None) -> tuple[int, int]:
    """(prompt, completion) tokens of a usage object of any endpoint."""
    if not isinstance(usage, dict):
        return 0, 0
    prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
    return (prompt if isinstance(prompt, int) else 0, completion if isinstance(completion, int) else 0)
