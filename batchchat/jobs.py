"""Read a JSONL job file lazily and turn each line into a `Job`, or an `InvalidLine` that says why not.

Three line shapes are accepted (see the README): an OpenAI Batch API line, a bare request body, and the
`{"prompt": ...}` shorthand filled from run defaults. Blank lines, CRLF and a UTF-8 BOM are tolerated.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
COMPLETIONS = "/v1/completions"
RESPONSES = "/v1/responses"
ENDPOINTS = (CHAT, EMBEDDINGS, COMPLETIONS, RESPONSES)

# The field that holds the completion cap, per endpoint (chat also accepts max_completion_tokens).
MAX_TOKENS_FIELDS = {
    CHAT: ("max_completion_tokens", "max_tokens"),
    COMPLETIONS: ("max_tokens",),
    RESPONSES: ("max_output_tokens",),
    EMBEDDINGS: (),
}
MAX_LINE_BYTES = 8 * 1024 * 1024
BLOCK_BYTES = 1 << 20  # what iter_blocks reads at a time
_BOM = b"\xef\xbb\xbf"
# A line whose first key is a plain custom_id (no escapes): the id can be read without parsing the line. The
# whitespace class leaves out the newline, so that a match never runs past its own line within a block.
_ID_HEAD = rb'\{[ \t\r\f\v]*"custom_id"[ \t\r\f\v]*:[ \t\r\f\v]*"([^"\\\n]*)"'
LEADING_ID = re.compile(_ID_HEAD)
_ID_PER_LINE = re.compile(rb"(?:" + _ID_HEAD + rb")?[^\n]*\n")  # the id, or b"" for a line without one


@dataclass(slots=True)
class Job:
    """One request to send: where, what, and where it came from."""

    custom_id: str
    url: str
    body: dict[str, Any]
    line_no: int
    metadata: Any = None


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


@dataclass(frozen=True, slots=True)
class JobDefaults:
    """Run-wide defaults that fill the `{"prompt": ...}` shorthand and bare bodies."""

    model: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    endpoint: str | None = None  # where bare bodies go; inferred from their fields when None


class _Invalid(Exception):
    def __init__(self, field: str | None, reason: str) -> None:
        self.field = field
        self.reason = reason


def iter_raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield `(line_no, bytes)` for every non-blank line, without a BOM or line ending."""
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, 1):
            if line_no == 1 and raw.startswith(_BOM):
                raw = raw[3:]
            raw = raw.rstrip(b"\r\n")
            if raw.strip():
                yield line_no, raw


def iter_blocks(path: Path) -> Iterator[bytes]:
    """The file as blocks of whole lines, about `BLOCK_BYTES` each; every block ends with a newline but the
    last one of a file that does not."""
    pending: list[bytes] = []  # the start of a line that began in an earlier read
    with path.open("rb") as handle:
        while chunk := handle.read(BLOCK_BYTES):
            cut = chunk.rfind(b"\n") + 1
            if not cut:
                pending.append(chunk)
                continue
            if pending:
                pending.append(chunk[:cut])
                yield b"".join(pending)
                pending.clear()
            else:
                yield chunk[:cut]
            if cut < len(chunk):
                pending.append(chunk[cut:])
    if pending:
        yield b"".join(pending)


def block_lines(line_no: int, block: bytes) -> Iterator[tuple[int, bytes]]:
    """The lines of a block from `iter_blocks` whose first line is `line_no`, as `iter_raw_lines` yields them."""
    for raw in block.split(b"\n"):
        if line_no == 1 and raw.startswith(_BOM):
            raw = raw[3:]
        raw = raw.rstrip(b"\r")
        if raw.strip():
            yield line_no, raw
        line_no += 1


def leading_ids(block: bytes) -> list[str] | None:
    """The custom_id of every line of `block` (whole lines, each ending with a newline), read without parsing.

    None unless every line starts with a plain one: `{"custom_id": "..."`, not empty, no escapes, valid UTF-8.
    """
    found = _ID_PER_LINE.findall(block)  # one item per line, as the pattern matches every line whole
    if b"" in found:
        return None
    try:
        return list(map(bytes.decode, found))
    except UnicodeDecodeError:
        return None


def derived_id(line_no: int) -> str:
    """The custom_id of a line that gives none."""
    return f"line-{line_no}"


def parse_line(raw: bytes, line_no: int, defaults: JobDefaults) -> Job | InvalidLine:
    """Turn one raw line into a `Job`, or an `InvalidLine` naming the field and the reason."""
    custom_id = derived_id(line_no)
    try:
        if len(raw) > MAX_LINE_BYTES:
            raise _Invalid(None, f"line is {len(raw):,} bytes, more than the {MAX_LINE_BYTES:,} allowed")
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
