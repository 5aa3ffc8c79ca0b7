"""Which models the simulator serves, and the request arguments a real endpoint refuses.

`DEFAULT_MODELS` is a list of current OpenAI model names; `SimulatorConfig.models` narrows or
replaces it, and `"*"` accepts any name (a self-hosted stand-in). A request for a model not served
gets OpenAI's 404 `model_not_found`. `check_arguments` refuses a few arguments that belong to
another endpoint (chat with `prompt`, embeddings with `messages`, ...) with OpenAI's 400
"Unrecognized request argument supplied: NAME"; it is a short list of known mistakes, not the
whole schema.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Light at import (config imports DEFAULT_MODELS, and `batchchat --help` imports config): the
# bodies' imports are made where they are used.

__all__ = ["ANY_MODEL", "DEFAULT_MODELS", "ModelNotFound", "ModelTable", "check_arguments"]

ANY_MODEL = "*"

DEFAULT_MODELS: tuple[str, ...] = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "o1",
    "o3",
    "o3-mini",
    "o4-mini",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "gpt-4-turbo",
    "gpt-4",
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-instruct",
    "davinci-002",
    "babbage-002",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
)

# Arguments each endpoint refuses because they belong to another one (mistakes actually made).
_FOREIGN: dict[str, tuple[str, ...]] = {
    "chat": ("prompt", "input"),
    "completions": ("messages", "input"),
    "embeddings": ("messages", "prompt"),
    "responses": ("messages",),  # the Responses API has a `prompt` (a stored prompt template)
}


class ModelNotFound(Exception):
    """A 404: the model asked for is not served."""

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.model = model

    def body(self) -> bytes:
        """OpenAI's `model_not_found` error body."""
        from batchchat.simulator.responses import error_body

        msg = f"The model `{self.model}` does not exist or you do not have access to it."
        return error_body(msg, "invalid_request_error", None, "model_not_found")


def check_arguments(endpoint: str, body: dict[str, Any]) -> None:
    """Raise `InvalidRequest` for the first argument `endpoint` ("chat", "completions", ...) refuses."""
    for name in _FOREIGN.get(endpoint, ()):
        if name in body:
            from batchchat.simulator.responses import InvalidRequest

            raise InvalidRequest(f"Unrecognized request argument supplied: {name}")


class ModelTable:
    """The served models: `check(model)` raises `ModelNotFound`; `list_body` answers GET /v1/models."""

    __slots__ = ("_set", "any", "names")

    def __init__(self, models: Iterable[str], extra: Iterable[str] = ()) -> None:
        names: list[str] = []
        for name in (*models, *extra):
            if name not in names:
                names.append(name)
        self.any = ANY_MODEL in names
        self.names = tuple(name for name in names if name != ANY_MODEL)
        self._set = frozenset(self.names)

    def serves(self, model: str) -> bool:
        """Whether `model` is served."""
        return self.any or model in self._set

    def check(self, model: str) -> None:
        """Raise `ModelNotFound` unless `model` is served."""
        if not self.any and model not in self._set:
            raise ModelNotFound(model)

    def list_body(self, created: int) -> bytes:
        """`GET /v1/models`: the named models (with only "*", the default list)."""
        import orjson

        names = self.names or DEFAULT_MODELS
        data = [{"id": name, "object": "model", "created": created, "owned_by": _owner(name)} for name in names]
        return orjson.dumps({"object": "list", "data": data})


def _owner(name: str) -> str:
    return "openai" if name in DEFAULT_MODELS else "batchchat"
