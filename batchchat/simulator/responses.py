"""OpenAI-shaped bodies: request validation, success replies per route, and error bodies."""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any

import orjson

from batchchat.simulator import tokens as tk

__all__ = ["InvalidRequest", "error_body"]


class InvalidRequest(Exception):
    """A 400: the message, and the parameter and code OpenAI would name."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> bytes:
    """`{"error": {"message", "type", "param", "code"}}` as JSON bytes."""
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _missing(param: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _wrong_type(param: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
        param,
        "invalid_type",
    )


def _positive_int(body: dict[str, Any], param: str) -> int | None:
    value = body.get(param)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong_type(param, "an integer", value)
    if value < 1:
        raise InvalidRequest(
            f"Invalid '{param}': integer below minimum value. Expected a value >= 1, but got {value} instead.",
            param,
            "integer_below_min_value",
        )
    return value


def common(body: dict[str, Any], cap_params: tuple[str, ...]) -> tuple[str, int | None, int]:
    """Check model, stream, n and the token cap; return (model, cap or None, n)."""
    model = body.get("model")
    if model is None:
        raise InvalidRequest("you must provide a model parameter", "model", "missing_required_parameter")
    if not isinstance(model, str):
        raise _wrong_type("model", "a string", model)
    stream = body.get("stream")
    if stream is not None:
        if not isinstance(stream, bool):
            raise _wrong_type("stream", "a boolean", stream)
        if stream:
            raise InvalidRequest(
                "Streaming is not supported by the batchchat simulator; send 'stream': false.",
                "stream",
                "unsupported_value",
            )
    n = _positive_int(body, "n") or 1
    cap = None
    for param in cap_params:
        value = _positive_int(body, param)
        if value is not None and cap is None:
            cap = value
    return model, cap, n


def check_chat(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Validate a chat request's messages; return them."""
    messages = body.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list):
        raise _wrong_type("messages", "an array of objects", messages)
    if not messages:
        raise InvalidRequest(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "messages",
            "empty_array",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _wrong_type(f"messages[{i}]", "an object", message)
        role = message.get("role")
        if role is None:
            raise _missing(f"messages[{i}].role")
        if not isinstance(role, str):
            raise _wrong_type(f"messages[{i}].role", "a string", role)
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _wrong_type(f"messages[{i}].content", "a string or an array", content)
    return messages


def check_items(body: dict[str, Any], param: str) -> Any:
    """Validate a completions prompt / embeddings input: str, [str], [int] or [[int]], not empty."""
    data = body.get(param)
    if data is None:
        raise _missing(param)
    if isinstance(data, str):
        if param == "input" and not data:
            raise InvalidRequest(f"'{param}' cannot be an empty string.", param, "invalid_value")
        return data
    if not isinstance(data, list):
        raise _wrong_type(param, "a string or an array", data)
    if not data:
        raise InvalidRequest(
            f"Invalid '{param}': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param,
            "empty_array",
        )
    for item in data:
        if not isinstance(item, str | int | list) or isinstance(item, bool):
            raise _wrong_type(param, "a string, an array of strings or an array of tokens", data)
    return data


def check_responses_input(body: dict[str, Any]) -> Any:
    """Validate a Responses API `input`: a non-empty string or a non-empty array."""
    data = body.get("input")
    if data is None:
        raise _missing("input")
    if isinstance(data, str):
        if not data:
            raise InvalidRequest("'input' cannot be an empty string.", "input", "invalid_value")
        return data
    if not isinstance(data, list):
        raise _wrong_type("input", "a string or an array", data)
    if not data:
        raise InvalidRequest("Invalid 'input': empty array.", "input", "empty_array")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _wrong_type("instructions", "a string", instructions)
    return data


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_body(rid: str, created: int, model: str, counts: list[int], cap: int, prompt: int) -> dict[str, Any]:
    """A chat.completion object with one choice per entry of `counts`."""
    choices = []
    for i, count in enumerate(counts):
        choices.append(
            {
                "index": i,
                "message": {"role": "assistant", "content": tk.filler(count), "refusal": None},
                "logprobs": None,
                "finish_reason": "length" if count >= cap else "stop",
            }
        )
    completion = sum(counts)
    return {
        "id": "chatcmpl-" + rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": _usage(prompt, completion),
        "system_fingerprint": "fp_simulator",
    }


def completion_body(rid: str, created: int, model: str, counts: list[int], cap: int, prompt: int) -> dict[str, Any]:
    """A text_completion object with one choice per entry of `counts`."""
    choices = [
        {
            "index": i,
            "text": tk.filler(count),
            "logprobs": None,
            "finish_reason": "length" if count >= cap else "stop",
        }
        for i, count in enumerate(counts)
    ]
    completion = sum(counts)
    return {
        "id": "cmpl-" + rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": _usage(prompt, completion),
    }


def responses_body(rid: str, created: int, model: str, count: int, cap: int, prompt: int) -> dict[str, Any]:
    """A Responses API `response` object with one output_text message."""
    truncated = count >= cap
    return {
        "id": "resp_" + rid,
        "object": "response",
        "created_at": created,
        "status": "incomplete" if truncated else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "error": None,
        "model": model,
        "output": [
            {
                "type": "message",
                "id": "msg_" + rid,
                "status": "incomplete" if truncated else "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": tk.filler(count), "annotations": []}],
            }
        ],
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": count,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + count,
        },
    }


def embedding_vector(seed: int, item: Any, dims: int) -> list[float]:
    """A deterministic unit vector for one input item."""
    raw = item.encode() if isinstance(item, str) else orjson.dumps(item)
    need = dims * 2
    digest = hashlib.shake_128(seed.to_bytes(8, "little", signed=True) + raw).digest(need)
    values = [(int.from_bytes(digest[i : i + 2], "little") - 32767.5) / 32767.5 for i in range(0, need, 2)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in values]


def embeddings_body(seed: int, model: str, data: Any, dims: int, prompt: int, base64_format: bool) -> dict[str, Any]:
    """An embeddings `list` object, one vector per input item."""
    items = [data] if isinstance(data, str) or (data and isinstance(data[0], int)) else data
    rows = []
    for i, item in enumerate(items):
        vector: Any = embedding_vector(seed, item, dims)
        if base64_format:
            vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        rows.append({"object": "embedding", "index": i, "embedding": vector})
    return {
        "object": "list",
        "data": rows,
        "model": model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    }
