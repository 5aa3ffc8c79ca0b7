"""Estimate what a request will be charged against the token budget before it is sent.

The provider's rule (OpenAI's, and the simulator's): a request costs its prompt tokens plus its completion
cap (`max_tokens` × `n`) when it is admitted. The prompt is estimated from its characters (about four to a
token, plus a few tokens of framing per message); the real `prompt_tokens` of each answer settle the difference.
"""

from __future__ import annotations

from typing import Any

from batchchat.config.settings import CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES
from batchchat.input.parse import MAX_TOKENS_FIELDS, Job

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


def prompt_parts(job: Job) -> tuple[int, int]:
    """(characters of text, tokens of framing) of a job's prompt."""
    body = job.body
    if job.url == CHAT:
        messages = body.get("messages") or []
        chars = sum(_text_chars(m.get("content")) for m in messages if isinstance(m, dict))
        return chars, TOKENS_PER_MESSAGE * len(messages) + REPLY_PRIMING_TOKENS
    if job.url == EMBEDDINGS:
        return _text_chars(body.get("input")), 0
    if job.url == COMPLETIONS:
        return _text_chars(body.get("prompt")), 0
    if job.url == RESPONSES:
        value = body.get("input")
        if isinstance(value, list):
            chars = sum(_text_chars(m.get("content")) if isinstance(m, dict) else _text_chars(m) for m in value)
        else:
            chars = _text_chars(value)
        return chars + _text_chars(body.get("instructions")), REPLY_PRIMING_TOKENS
    return 0, 1


def prompt_estimate(job: Job, chars_per_token: float = CHARS_PER_TOKEN) -> int:
    """Estimated prompt tokens of a job (at least 1)."""
    chars, framing = prompt_parts(job)
    return max(1, int(chars / chars_per_token + 0.999) + framing)


class PromptEstimator:
    """Prompt estimates that learn this job's characters-per-token ratio from the real usage of answers.

    The learned figure paces requests closer to what the server will count; the completion cap is still
    charged in full up front, as the provider does.
    """

    __slots__ = ("chars_per_token",)

    def __init__(self, chars_per_token: float = CHARS_PER_TOKEN) -> None:
        self.chars_per_token = chars_per_token

    def estimate(self, job: Job) -> int:
        """Estimated prompt tokens of `job` at the ratio learned so far."""
        return prompt_estimate(job, self.chars_per_token)

    def learn(self, job: Job, prompt_tokens: int) -> None:
        """Move the ratio a little towards what this answer's `prompt_tokens` shows."""
        chars, framing = prompt_parts(job)
        text_tokens = prompt_tokens - framing
        if chars >= 16 and text_tokens > 0:
            observed = min(12.0, max(1.0, chars / text_tokens))
            self.chars_per_token += 0.05 * (observed - self.chars_per_token)


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
