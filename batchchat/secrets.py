"""Keep the API key out of everything batchchat prints or writes."""

from __future__ import annotations

REDACTED = "[REDACTED]"


class Secret:
    """A string that never shows itself in `repr`, `str` or f-strings; `.reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


class Redactor:
    """Replaces every occurrence of the key in text and bytes bound for output, logs or errors."""

    __slots__ = ("_bytes", "_text")

    def __init__(self, secret: Secret | None) -> None:
        value = secret.reveal() if secret else ""
        # Keys shorter than 8 characters would redact ordinary words; nobody issues such keys.
        self._text = value if len(value) >= 8 else ""
        self._bytes = self._text.encode()

    def text(self, text: str) -> str:
        """`text` with the key replaced."""
        if self._text and self._text in text:
            return text.replace(self._text, REDACTED)
        return text

    def data(self, data: bytes) -> bytes:
        """`data` with the key replaced."""
        if self._bytes and self._bytes in data:
            return data.replace(self._bytes, REDACTED.encode())
        return data
