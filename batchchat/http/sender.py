"""The sender seam: the protocol every HTTP client's sender meets, and `open_sender`, which picks one.

The senders import nothing from here, so there is no import circle: aiohttp driven directly by default
(`aiohttp_sender`, the fastest Python client measured here), or httpx (`httpx_sender`: `transport="httpx"`,
or an `httpx.AsyncClient` handed in, as respx is in tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from batchchat.config.settings import EndpointConfig
from batchchat.http.outcomes import Outcome
from batchchat.secrets import Redactor

if TYPE_CHECKING:
    import httpx


class Sender(Protocol):
    """Sends one attempt and classifies what came back; never raises for HTTP or network trouble."""

    async def send(self, path: str, content: bytes) -> Outcome:
        """POST `content` to the endpoint `path` and classify the answer."""
        ...

    async def aclose(self) -> None:
        """Close the connections this sender opened (not those of a client it was given)."""
        ...


def open_sender(endpoint: EndpointConfig, concurrency: int, redactor: Redactor,
                client: httpx.AsyncClient | None = None) -> Sender:
    """The sender for a run: the given httpx client, httpx's own transport, or aiohttp (the default).

    Call it from a running event loop (aiohttp binds its session to the loop).
    """
    if client is not None or endpoint.transport == "httpx":
        from batchchat.http.httpx_sender import HttpxSender, build_client

        if client is not None:
            return HttpxSender(client, endpoint, redactor, owns_client=False)
        return HttpxSender(build_client(endpoint, concurrency), endpoint, redactor, owns_client=True)
    from batchchat.http.aiohttp_sender import AiohttpSender

    return AiohttpSender(endpoint, concurrency, redactor)
