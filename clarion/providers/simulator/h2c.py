"""A small HTTP/2 server (cleartext, prior knowledge) for the simulated APNs, built on `h2`.

aiohttp cannot serve HTTP/2, and Apple serves APNs over nothing else. The simulator's port
takes both: a connection that opens with the HTTP/2 preface is served here, any other goes
to aiohttp (`FirstBytes`). So the simulator's one URL is also its APNs URL, and an HTTP/1.1
client never reaches the APNs handler.

One `H2Server` protocol per connection: it collects each stream's headers and body, and
when the stream ends asks the handler for an answer (concurrently, so streams multiplex),
then writes it. Answers are small JSON bodies, well inside the flow-control window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

log = logging.getLogger("clarion.simulator")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_CONCURRENT_STREAMS = 1000  # what APNs allows once a connection has authenticated


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names; pseudo-headers (":path", …) included
    body: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


Handler = Callable[[Request], Awaitable[Response]]


class H2Server(asyncio.Protocol):
    """One HTTP/2 connection: streams collected, each answered by `handler` as it ends."""

    def __init__(self, handler: Handler, connections: set[H2Server]) -> None:
        self.handler = handler
        self.connections = connections
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.conn.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS}
        )
        self.streams: dict[int, Request] = {}
        self.answering: set[asyncio.Task[None]] = set()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's transports are not subclasses)
        self.connections.add(self)
        self.conn.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()  # h2 has queued a GOAWAY saying why
            self.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                headers = {str(k): str(v) for k, v in ev.headers or []}
                self.streams[ev.stream_id] = Request(headers.get(":method", ""), headers.get(":path", ""), headers)
            elif isinstance(ev, h2.events.DataReceived):
                if ev.stream_id in self.streams and ev.data:
                    self.streams[ev.stream_id].body += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in self.streams:
                task = asyncio.create_task(self.answer(ev.stream_id, self.streams.pop(ev.stream_id)))
                self.answering.add(task)
                task.add_done_callback(self.answering.discard)
            elif isinstance(ev, h2.events.StreamReset):
                self.streams.pop(ev.stream_id, None)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.close()
        self.flush()

    async def answer(self, stream_id: int, request: Request) -> None:
        try:
            response = await self.handler(request)
        except Exception:  # a bug in the handler: answer, rather than leave the stream hanging
            log.exception("HTTP/2 handler failed on %s", request.path)
            response = Response(500, {"content-type": "application/json"}, b'{"reason":"InternalServerError"}')
        if self.transport is None or self.transport.is_closing():
            return
        headers = [(":status", str(response.status)), ("content-length", str(len(response.body)))]
        headers += [(name.lower(), value) for name, value in response.headers.items()]  # HTTP/2: lower-case
        try:
            self.conn.send_headers(stream_id, headers, end_stream=not response.body)
            if response.body:
                self.conn.send_data(stream_id, response.body, end_stream=True)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return  # the client reset the stream (a timeout) or went away
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        """Say GOAWAY and hang up (streams already taken are still recorded, as APNs would)."""
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.conn.close_connection()
            self.flush()
            self.transport.close()

    def stop(self) -> None:
        """Close, and drop the answers still waiting (the simulator is shutting down)."""
        self.close()
        for task in self.answering:
            task.cancel()


class FirstBytes(asyncio.Protocol):
    """Reads a new connection's first bytes, then hands it to the HTTP/2 server or to aiohttp."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's transports are not subclasses)
        self.listener.undecided.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.undecided.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        is_http2 = self.buffer.startswith(PREFACE)
        if not is_http2 and PREFACE.startswith(self.buffer):
            return  # too few bytes to tell yet
        assert self.transport is not None
        self.listener.undecided.discard(self)
        protocol = H2Server(self.listener.handler, self.listener.connections) if is_http2 else self.listener.http1()
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        if isinstance(protocol, asyncio.Protocol):
            protocol.data_received(self.buffer)


class Listener:
    """A listening socket; closing it closes the connections aiohttp does not own."""

    def __init__(self, handler: Handler, http1: Callable[[], asyncio.BaseProtocol]) -> None:
        self.handler = handler
        self.http1 = http1
        self.undecided: set[FirstBytes] = set()  # connected, nothing said yet
        self.connections: set[H2Server] = set()
        self.server: asyncio.Server | None = None

    async def close(self) -> None:
        if self.server is None:
            return
        self.server.close()
        for waiting in list(self.undecided):
            if waiting.transport is not None:
                waiting.transport.close()
        for connection in list(self.connections):
            connection.stop()
        await self.server.wait_closed()


async def serve(host: str, port: int, handler: Handler, http1: Callable[[], asyncio.BaseProtocol]) -> Listener:
    """Listen on host:port: HTTP/2 connections go to `handler`, others to the `http1` protocol factory."""
    listener = Listener(handler, http1)
    listener.server = await asyncio.get_running_loop().create_server(lambda: FirstBytes(listener), host, port)
    return listener
