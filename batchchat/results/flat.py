"""One output line as one flat row: the answer's text, tokens, cost and outcome as plain columns.

Reads batchchat's own lines and plain OpenAI Batch API output lines alike. A line whose `error` is null but
whose response is not a 2xx (a Batch API output holds 4xx answers that way) is a failure here, with the body's
error code. Chat, completions, responses and embeddings answers are understood; metadata and `parsed` (a
structured answer, issue #24 item 1) come as dicts for the caller to spread into columns.
"""

from __future__ import annotations

import base64
from array import array
from typing import Any

# The fixed columns of an export, in order (metadata, parsed fields and joined input columns follow).
COLUMNS = ("custom_id", "status", "status_code", "cached", "content", "finish_reason", "model", "service_tier",
           "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens", "cost_usd", "attempts",
           "latency_ms", "error_code", "error_message", "line", "request_id")
KINDS = {"custom_id": "str", "status": "str", "status_code": "int", "cached": "bool", "content": "str",
         "finish_reason": "str", "model": "str", "service_tier": "str", "prompt_tokens": "int",
         "completion_tokens": "int", "cached_tokens": "int", "reasoning_tokens": "int", "cost_usd": "float",
         "attempts": "int", "latency_ms": "float", "error_code": "str", "error_message": "str", "line": "int",
         "request_id": "str"}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def outcome(line: dict[str, Any]) -> tuple[bool, int | None, str | None, str | None]:
    """(ok, status code, error code, error message) of a line: ok needs no error and a 2xx answer."""
    response = _dict(line.get("response"))
    status = _int(response.get("status_code"))
    error = line.get("error")
    if isinstance(error, dict) and error:
        return False, status, str(error.get("code") or "error"), _text(error.get("message"))
    if error:
        return False, status, "error", str(error)
    if status is None or not 200 <= status < 300:
        body_error = _dict(_dict(response.get("body")).get("error"))
        code = body_error.get("code") or body_error.get("type") or (f"http_{status}" if status else "no_response")
        return False, status, str(code), _text(body_error.get("message"))
    return True, status, None, None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def flatten(line: dict[str, Any]) -> tuple[dict[str, Any], Any, dict[str, Any] | None, dict[str, Any] | None]:
    """(the fixed columns, the embedding or None, the metadata dict or None, the parsed dict or None)."""
    try:
        return _flatten_chat(line)
    except (AttributeError, TypeError, KeyError, IndexError):
        return _flatten(line)


def _flatten_chat(line: dict[str, Any]) -> tuple[dict[str, Any], Any, dict[str, Any] | None, dict[str, Any] | None]:
    """`flatten` of the common line, a chat success shaped as batchchat writes it, in few steps; any other shape
    raises and `_flatten` takes it."""
    response = line["response"]
    body = response["body"]
    status = response["status_code"]
    usage = line["usage"]
    metadata = line.get("metadata")
    if (line["error"] is not None or status != 200 or "parsed" in line or "prompt_tokens_details" in usage
            or not isinstance(line["custom_id"], str)
            or "completion_tokens_details" in usage or (metadata is not None and not isinstance(metadata, dict))):
        raise KeyError  # the careful path
    first = body["choices"][0]
    cost, latency = line.get("cost_usd"), line.get("latency_ms")
    return ({"custom_id": line["custom_id"], "status": "ok", "status_code": 200, "cached": line.get("cached", False),
             "content": first["message"]["content"], "finish_reason": first["finish_reason"], "model": body["model"],
             "service_tier": body.get("service_tier"), "prompt_tokens": usage["prompt_tokens"],
             "completion_tokens": usage["completion_tokens"], "cached_tokens": None, "reasoning_tokens": None,
             "cost_usd": None if cost is None else float(cost), "attempts": line.get("attempts"),
             "latency_ms": None if latency is None else float(latency), "error_code": None, "error_message": None,
             "line": line.get("line"), "request_id": response.get("request_id")}, None, metadata, None)


def _flatten(line: dict[str, Any]) -> tuple[dict[str, Any], Any, dict[str, Any] | None, dict[str, Any] | None]:
    ok, status, error_code, error_message = outcome(line)
    response = _dict(line.get("response"))
    body = _dict(response.get("body"))
    usage = _dict(line.get("usage") or body.get("usage"))
    content, finish, embedding = _answer(body)
    prompt_details = _dict(usage.get("prompt_tokens_details") or usage.get("input_tokens_details"))
    completion_details = _dict(usage.get("completion_tokens_details") or usage.get("output_tokens_details"))
    row = {
        "custom_id": _text(line.get("custom_id")),
        "status": "ok" if ok else "failed",
        "status_code": status,
        "cached": bool(line.get("cached", False)),
        "content": content,
        "finish_reason": finish,
        "model": _text(body.get("model")),
        "service_tier": _text(body.get("service_tier")),
        "prompt_tokens": _int(usage.get("prompt_tokens", usage.get("input_tokens"))),
        "completion_tokens": _int(usage.get("completion_tokens", usage.get("output_tokens"))),
        "cached_tokens": _int(prompt_details.get("cached_tokens")),
        "reasoning_tokens": _int(completion_details.get("reasoning_tokens")),
        "cost_usd": _float(line.get("cost_usd")),
        "attempts": _int(line.get("attempts")),
        "latency_ms": _float(line.get("latency_ms")),
        "error_code": error_code,
        "error_message": error_message,
        "line": _int(line.get("line")),
        "request_id": _text(response.get("request_id")),
    }
    metadata = line.get("metadata")
    parsed = line.get("parsed")
    return (row, embedding, metadata if metadata is None or isinstance(metadata, dict) else {"metadata": metadata},
            parsed if parsed is None or isinstance(parsed, dict) else {"parsed": parsed})


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _answer(body: dict[str, Any]) -> tuple[str | None, str | None, Any]:
    """(text, finish reason, embedding) of a response body of any endpoint."""
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        first = choices[0]
        message = _dict(first.get("message"))
        text = message.get("content") if message else first.get("text")
        return _text(text), _text(first.get("finish_reason")), None
    data = body.get("data")
    if isinstance(data, list) and data:
        vectors = [_vector(item.get("embedding")) for item in data if isinstance(item, dict)]
        return None, None, vectors[0] if len(vectors) == 1 else vectors
    if body.get("object") == "response" or "output" in body:
        return _response_text(body), _text(body.get("status")), None
    return None, None, None


def _vector(value: Any) -> list[float] | None:
    if isinstance(value, list):
        return value
    if isinstance(value, str):  # encoding_format "base64": little-endian float32
        return array("f", base64.b64decode(value)).tolist()
    return None


def _response_text(body: dict[str, Any]) -> str | None:
    if isinstance(body.get("output_text"), str):
        return body["output_text"]
    parts = [part.get("text", "") for item in body.get("output") or () if isinstance(item, dict)
             for part in item.get("content") or () if isinstance(part, dict) and part.get("type") == "output_text"]
    return "".join(parts) if parts else None


def kind_of(value: Any) -> str | None:
    """The column kind a JSON value asks for: bool, int, float, str or json (None for null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if -(2**63) <= value < 2**63 else "json"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "json"


def merge_kinds(kinds: set[str]) -> str:
    """One column's kind from the kinds of its values: numbers widen to float, anything else mixed is JSON text."""
    if not kinds:
        return "str"
    if len(kinds) == 1:
        return next(iter(kinds))
    if kinds <= {"int", "float"}:
        return "float"
    return "json"
