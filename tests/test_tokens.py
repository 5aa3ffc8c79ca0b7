"""Up-front token charges: prompt estimate + completion cap x n."""

from __future__ import annotations

from batchchat.config.settings import CHAT, EMBEDDINGS, RESPONSES
from batchchat.input.parse import Job
from batchchat.pacing.tokens import (
    DEFAULT_COMPLETION_CAP,
    charged_tokens,
    completion_cap,
    prompt_estimate,
    usage_totals,
)


def test_chat_estimate_counts_characters_and_message_framing() -> None:
    job = Job("a", CHAT, {"model": "m", "messages": [{"role": "user", "content": "x" * 40}]}, 1)
    assert prompt_estimate(job) == 10 + 4 + 3


def test_content_parts_are_counted() -> None:
    job = Job("a", CHAT, {"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "y" * 8}, {"type": "image_url"}]}]}, 1)
    assert prompt_estimate(job) == 2 + 4 + 3


def test_completion_cap_multiplies_by_n_and_defaults() -> None:
    assert completion_cap(Job("a", CHAT, {"max_tokens": 100, "n": 3}, 1)) == 300
    assert completion_cap(Job("a", CHAT, {"max_completion_tokens": 7}, 1)) == 7
    assert completion_cap(Job("a", CHAT, {}, 1)) == DEFAULT_COMPLETION_CAP
    assert completion_cap(Job("a", RESPONSES, {"max_output_tokens": 9}, 1)) == 9
    assert completion_cap(Job("a", EMBEDDINGS, {"input": "x"}, 1)) == 0


def test_embedding_estimate_over_a_list() -> None:
    assert prompt_estimate(Job("a", EMBEDDINGS, {"input": ["abcd", "efgh"]}, 1)) == 2


def test_usage_shapes() -> None:
    assert charged_tokens({"prompt_tokens": 5, "completion_tokens": 2}) == 5
    assert charged_tokens({"input_tokens": 4, "output_tokens": 1}) == 4
    assert charged_tokens(None) is None
    assert usage_totals({"input_tokens": 4, "output_tokens": 1}) == (4, 1)
    assert usage_totals({"prompt_tokens": 8, "total_tokens": 8}) == (8, 0)
