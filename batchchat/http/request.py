"""What both senders share: the headers every request carries and the words for a failure without an answer."""

from __future__ import annotations

from batchchat.config.settings import EndpointConfig


def request_headers(endpoint: EndpointConfig) -> dict[str, str]:
    """The headers every request carries: JSON, our user agent, the key (Azure's way or OpenAI's), extras."""
    headers = {"content-type": "application/json", "user-agent": "batchchat"}
    if endpoint.api_key:
        if endpoint.azure_api_version:
            headers["api-key"] = endpoint.api_key.reveal()
        else:
            headers["authorization"] = f"Bearer {endpoint.api_key.reveal()}"
    headers.update(dict(endpoint.extra_headers))
    return headers


def timeout_message(connect: bool, endpoint: EndpointConfig) -> str:
    """The same words for a timeout whichever client timed out."""
    if connect:
        return f"timeout: could not connect within {endpoint.connect_timeout:g} s"
    return f"timeout: no answer within {endpoint.read_timeout:g} s"


def describe(exc: BaseException) -> str:
    """An exception as `Type: message`, for an outcome's message."""
    return f"{type(exc).__name__}: {exc}".rstrip(": ")
