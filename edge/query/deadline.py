"""A uvicorn HTTP/1.1 protocol with a request deadline: a connection must deliver each request in time.

uvicorn times out idle keep-alive connections, but not a client that connects and then sends its
request line, headers or body a byte at a time (slowloris): issue 12 found 15 of 15 such clients
still connected after 80 s. This protocol arms a timer when a connection opens and again after
each response; if the response has not started when it fires, the connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class _DeadlineH11Protocol(H11Protocol):
    request_timeout_s = 30.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request on a kept-alive connection gets its own deadline

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            return  # answering: the response is on its way
        if not self.transport.is_closing():
            self.transport.close()


def deadline_protocol(request_timeout_s: float) -> type[Any]:
    """The protocol class for `uvicorn.Config(http=...)` with this deadline."""
    return type("DeadlineH11Protocol", (_DeadlineH11Protocol,), {"request_timeout_s": float(request_timeout_s)})
