"""Turn one raw input line into a `Job`, or an `InvalidLine` that names the field and says why not.

Three line shapes are accepted (see the README): an OpenAI Batch API line, a bare request body, and the
`{"prompt": ...}` shorthand filled from run defaults.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchchat.config.settings import CHAT, COMPLETIONS, EMBEDDINGS, ENDPOINTS, RESPONSES, JobDefaults
from batchchat.input.reader import MAX_LINE_BYTES, iter_raw_lines

# The field that holds the completion cap, per endpoint (chat also accepts max_completion_tokens).
MAX_TOKENS_FIELDS = {
    CHAT: ("max_completion_tokens", "max_tokens"),
    COMPLETIONS: ("max_tokens",),
    RESPONSES: ("max_output_tokens",),
    EMBEDDINGS: (),
}


@dataclass(slots=True)
class Job:
    """One request to send: where, what, and where it came from."""

    custom_id: str
    url: str
    body: dict[str, Any]
    line_no: int
    metadata: Any = None
    line_hash: int = 0  # of the input line as read, with the run's defaults (`output.lines.line_hasher`; 0: none)


@dataclass(slots=True)
class InvalidLine:
    """A line that cannot be sent, with the field at fault and the reason."""

    custom_id: str
    line_no: int
    field: str | None
    reason: str

    def describe(self, path: str) -> str:
        """One line for a person: `file:line: field: reason`."""
        where = f"{path}:{self.line_no}"
        return f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


ROW_ERROR = "batchchat_row_error"  # a table row that is not a request: [field, reason] (input/table_spool.py)


class _Invalid(Exception):
    def __init__(self, field: str | None, reason: str) -> None:
        self.field = field
        self.reason = reason


def derived_id(line_no: int) -> str:
    """The custom_id of a line that gives none."""
    return f"line-{line_no}"


def parse_line(raw: bytes, line_no: int, defaults: JobDefaults) -> Job | InvalidLine:
    """Turn one raw line into a `Job`, or an `InvalidLine` naming the field and the reason."""
    custom_id = derived_id(line_no)
    try:
        if len(raw) > MAX_LINE_BYTES:
            raise _Invalid(None, f"line is longer than the {MAX_LINE_BYTES:,} bytes allowed")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if isinstance(exc.__cause__, UnicodeDecodeError) or "utf-8" in str(exc).lower():
                raise _Invalid(None, "line is not valid UTF-8") from None
            raise _Invalid(None, f"not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise _Invalid(None, f"expected a JSON object, got {_kind(data)}")
        if "custom_id" in data:
            custom_id = _custom_id(data["custom_id"])
        if ROW_ERROR in data:  # a table row that is not a request (input/table_spool.py): [field, reason]
            raise _Invalid(*data[ROW_ERROR])
        if "body" in data or "url" in data or "method" in data:
            return _batch_line(data, custom_id, line_no)
        return _bare_line(data, custom_id, line_no, defaults)
    except _Invalid as bad:
        return InvalidLine(custom_id, line_no, bad.field, bad.reason)


def read_jobs(path: Path, defaults: JobDefaults) -> Iterator[Job | InvalidLine]:
    """Parse every non-blank line of `path`, lazily, in file order."""
    for line_no, raw in iter_raw_lines(path):
        yield parse_line(raw, line_no, defaults)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _custom_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid("custom_id", f"must be a non-empty string, got {_kind(value)}")
    return value


def _batch_line(data: dict[str, Any], custom_id: str, line_no: int) -> Job:
    method = data.get("method", "POST")
    if method != "POST":
        raise _Invalid("method", f"must be \"POST\", got {orjson.dumps(method).decode()}")
    url = data.get("url")
    if not isinstance(url, str):
        raise _Invalid("url", f"must be one of {', '.join(ENDPOINTS)}")
    url = url if url.startswith("/v1/") else "/v1/" + url.lstrip("/")
    if url not in ENDPOINTS:
        raise _Invalid("url", f"{data['url']!r} is not a supported endpoint ({', '.join(ENDPOINTS)})")
    body = data.get("body")
    if not isinstance(body, dict):
        raise _Invalid("body", f"must be a JSON object, got {_kind(body)}")
    _validate_body(url, body)
    return Job(custom_id, url, body, line_no, data.get("metadata"))


def _bare_line(data: dict[str, Any], custom_id: str, line_no: int, defaults: JobDefaults) -> Job:
    body = dict(data)
    body.pop("custom_id", None)
    metadata = body.pop("metadata", None)
    url = defaults.endpoint or _infer_endpoint(body)
    if url == CHAT and "messages" not in body and "prompt" in body:
        body = _expand_shorthand(body, defaults)
    if defaults.model and "model" not in body:
        body["model"] = defaults.model
    if url in (CHAT, COMPLETIONS, RESPONSES):
        if defaults.max_tokens is not None and not any(f in body for f in MAX_TOKENS_FIELDS[url]):
            body[MAX_TOKENS_FIELDS[url][-1]] = defaults.max_tokens
        if defaults.temperature is not None and "temperature" not in body:
            body["temperature"] = defaults.temperature
    _validate_body(url, body)
    return Job(custom_id, url, body, line_no, metadata)


def _infer_endpoint(body: dict[str, Any]) -> str:
    if "messages" in body or "prompt" in body:
        return CHAT
    if "input" in body:
        return EMBEDDINGS
    raise _Invalid("messages", "missing: give \"messages\", \"prompt\" or \"input\", or a Batch API line")


def _expand_shorthand(body: dict[str, Any], defaults: JobDefaults) -> dict[str, Any]:
    prompt = body.pop("prompt")
    if not isinstance(prompt, str):
        raise _Invalid("prompt", f"must be a string, got {_kind(prompt)}")
    system = body.pop("system", defaults.system)
    if system is not None and not isinstance(system, str):
        raise _Invalid("system", f"must be a string, got {_kind(system)}")
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return {**body, "messages": messages}


def _validate_body(url: str, body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is None:
        raise _Invalid("model", "missing (give it in the line or with --model)")
    if not isinstance(model, str) or not model:
        raise _Invalid("model", f"must be a non-empty string, got {_kind(model)}")
    if "stream" in body:
        stream = body["stream"]
        if not isinstance(stream, bool):
            raise _Invalid("stream", f"must be a boolean, got {_kind(stream)}")
        if stream:
            raise _Invalid("stream", "true is not supported: batchchat collects whole responses")
    if url == CHAT:
        if "prompt" in body and "messages" in body:
            raise _Invalid("prompt", 'not allowed beside "messages" (a chat request takes one or the other)')
        _validate_messages(body.get("messages"))
    elif url == EMBEDDINGS:
        _validate_input(body, "input")
    elif url == COMPLETIONS:
        _validate_input(body, "prompt")
    else:
        _validate_input(body, "input")
    for field in MAX_TOKENS_FIELDS[url]:
        if field in body:
            _positive_int(body, field)
    if "n" in body:
        _positive_int(body, "n")
    temperature = body.get("temperature")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, int | float)):
        raise _Invalid("temperature", f"must be a number, got {_kind(temperature)}")


def _validate_messages(messages: Any) -> None:
    if messages is None:
        raise _Invalid("messages", "missing")
    if not isinstance(messages, list) or not messages:
        raise _Invalid("messages", f"must be a non-empty array, got {_kind(messages)}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _Invalid(f"messages[{i}]", f"must be an object, got {_kind(message)}")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise _Invalid(f"messages[{i}].role", "missing or not a string")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _Invalid(f"messages[{i}].content", f"must be a string or an array, got {_kind(content)}")


def _validate_input(body: dict[str, Any], field: str) -> None:
    value = body.get(field)
    if value is None:
        raise _Invalid(field, "missing")
    if isinstance(value, str):
        return
    if not isinstance(value, list) or not value:
        raise _Invalid(field, f"must be a string or a non-empty array, got {_kind(value)}")


def _positive_int(body: dict[str, Any], field: str) -> None:
    value = body[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _Invalid(field, f"must be a positive integer, got {orjson.dumps(value).decode()}")
