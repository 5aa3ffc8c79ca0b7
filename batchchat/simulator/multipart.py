"""A small `multipart/form-data` parser (RFC 7578) for the simulator's file uploads.

The whole body is in memory already (the server collects it), so this is a scan for the
boundary, not a streaming parser. Malformed input raises `MultipartError`.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import unquote

__all__ = ["MultipartError", "Part", "parse_form", "parse_header_params"]


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


class Part(NamedTuple):
    """One form field: its name, the filename (file parts only), its content type and its bytes."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def parse_header_params(value: str) -> tuple[str, dict[str, str]]:
    """`'form-data; name="file"; filename="a.jsonl"'` -> `("form-data", {"name": "file", "filename": "a.jsonl"})`.

    Quoted strings may hold `;` and backslash escapes; `key*=UTF-8''...` (RFC 5987) is decoded and
    wins over `key=`. Parameter names are lower-cased.
    """
    n = len(value)
    end = value.find(";")
    head = (value if end < 0 else value[:end]).strip().lower()
    params: dict[str, str] = {}
    extended: dict[str, str] = {}
    i = n if end < 0 else end + 1
    while i < n:
        eq = value.find("=", i)
        if eq < 0:
            break
        key = value[i:eq].strip().lower()
        i = eq + 1
        while i < n and value[i] == " ":
            i += 1
        if i < n and value[i] == '"':
            i += 1
            chars: list[str] = []
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(value[i])
                i += 1
            if i >= n:
                raise MultipartError(f"unterminated quoted string in {value!r}")
            i += 1
            text = "".join(chars)
            semi = value.find(";", i)
            i = n if semi < 0 else semi + 1
        else:
            semi = value.find(";", i)
            text = (value[i:] if semi < 0 else value[i:semi]).strip()
            i = n if semi < 0 else semi + 1
        if key.endswith("*"):
            charset, _, rest = text.partition("'")
            _lang, _, encoded = rest.partition("'")
            try:
                extended[key[:-1]] = unquote(encoded, encoding=charset or "utf-8", errors="strict")
            except (LookupError, UnicodeDecodeError) as exc:
                raise MultipartError(f"bad extended parameter {key}") from exc
        elif key:
            params[key] = text
    params.update(extended)
    return head, params


def _boundary(content_type: str) -> bytes:
    kind, params = parse_header_params(content_type)
    if kind != "multipart/form-data":
        raise MultipartError(f"expected multipart/form-data, got {kind or 'no content type'!r}")
    boundary = params.get("boundary", "")
    if not 1 <= len(boundary) <= 200:
        raise MultipartError("multipart/form-data without a valid boundary")
    return boundary.encode("latin-1")


def parse_form(content_type: str, body: bytes) -> dict[str, Part]:
    """The parts of a multipart/form-data `body`, by field name (the first part of a name wins)."""
    delimiter = b"--" + _boundary(content_type)
    start = body.find(delimiter)
    if start < 0 or (start > 0 and body[start - 2 : start] != b"\r\n"):
        raise MultipartError("multipart body does not contain its boundary")
    pos = start + len(delimiter)
    parts: dict[str, Part] = {}
    while True:
        if body[pos : pos + 2] == b"--":
            return parts
        eol = body.find(b"\r\n", pos)
        if eol < 0 or body[pos:eol].strip(b" \t"):
            raise MultipartError("malformed boundary line")
        head_start = eol + 2
        head_end = body.find(b"\r\n\r\n", head_start)
        if head_end < 0:
            raise MultipartError("part headers are not terminated")
        data_start = head_end + 4
        next_delim = body.find(b"\r\n" + delimiter, data_start)
        if next_delim < 0:
            raise MultipartError("multipart body is not terminated by its closing boundary")
        headers: dict[str, str] = {}
        for raw in body[head_start:head_end].split(b"\r\n"):
            name, sep, value = raw.partition(b":")
            if not sep:
                raise MultipartError(f"malformed part header {raw[:80]!r}")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("utf-8", "replace")
        disposition = headers.get("content-disposition")
        if disposition is None:
            raise MultipartError("a part has no Content-Disposition header")
        kind, params = parse_header_params(disposition)
        if kind != "form-data" or "name" not in params:
            raise MultipartError("a part's Content-Disposition is not form-data with a name")
        name = params["name"]
        if name not in parts:
            parts[name] = Part(name, params.get("filename"), headers.get("content-type"), body[data_start:next_delim])
        pos = next_delim + 2 + len(delimiter)
