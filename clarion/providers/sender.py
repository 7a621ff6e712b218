"""The sender process: provider calls that outlive the worker that asked for them.

A worker killed while its provider calls are in flight cannot know which of them the
provider took, and neither can the worker that replays its records: with a 200 ms
provider, every kill left dozens of deliveries claimed and unsettled, to be sent again
when their claims expired (duplicates) or dead-lettered while they waited. So each worker
starts one sender process, in its own session, and hands it every batch of deliveries
over a pipe. The sender claims, calls and settles them in the ledger (dispatch.py) and
answers over the pipe. If the worker dies, the sender still finishes every order it has
read (and those still in the pipe), settles them, and exits at end of input. The replay
then finds each delivery `sent`, `failed` or `dead` in the ledger, or `in_flight` for a
moment and looks again, without spending an attempt.

Frames both ways: a 4-byte big-endian length, then msgpack `[batch id, [orders]]` or
`[batch id, [replies]]`. Logs go to stderr, which is the worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import logging.config
import os
import struct
import sys
from collections.abc import Sequence
from typing import Any

import msgspec

from clarion.logs import LOGGING_CONFIG, event
from clarion.providers.dispatch import Order, Reply, dispatcher_for
from clarion.topology.settings import Settings

log = logging.getLogger("clarion.sender")
_LENGTH = struct.Struct(">I")
_encode = msgspec.msgpack.Encoder().encode
_orders = msgspec.msgpack.Decoder(tuple[int, list[Order]])
_replies = msgspec.msgpack.Decoder(tuple[int, list[Reply]])


def frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader) -> bytes | None:
    """The next frame's payload, or None at end of input."""
    try:
        (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        return None


class SenderGone(ConnectionError):
    """The sender process exited with batches unanswered; their deliveries' fate is in the ledger."""


class SenderProcess:
    """The worker's side: starts the sender on first use and runs batches of orders through it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[list[Reply]]] = {}
        self._ids = itertools.count()
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        """Start it now, so its imports and connections are done before the first delivery (~1 s)."""
        await self._started()

    async def run(self, orders: Sequence[Order]) -> list[Reply]:
        proc = await self._started()
        batch_id = next(self._ids)
        answer: asyncio.Future[list[Reply]] = asyncio.get_running_loop().create_future()
        self._waiting[batch_id] = answer
        assert proc.stdin is not None
        try:
            proc.stdin.write(frame(_encode((batch_id, orders))))
            await proc.stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            self._waiting.pop(batch_id, None)
            raise SenderGone(f"cannot write to the sender: {exc!r}") from None
        return await answer

    async def _started(self) -> asyncio.subprocess.Process:
        async with self._starting:
            if self._proc is None or self._proc.returncode is not None:
                from clarion.topology.worker import settings_env

                self._proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "clarion.providers.sender",
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    env={**os.environ, **settings_env(self.settings)},
                    start_new_session=True,  # a signal to the worker's process group does not reach it
                )  # fmt: skip
                self._reader = asyncio.create_task(self._read_replies(self._proc))
                event(log, "sender process started", pid=self._proc.pid)
            return self._proc

    async def _read_replies(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while (payload := await read_frame(proc.stdout)) is not None:
            batch_id, replies = _replies.decode(payload)
            answer = self._waiting.pop(batch_id, None)
            if answer is not None and not answer.done():
                answer.set_result(replies)
        code = await proc.wait()
        if self._waiting:
            event(log, "sender process exited with batches unanswered", level=logging.ERROR, code=code,
                  batches=len(self._waiting))  # fmt: skip
        for answer in self._waiting.values():
            if not answer.done():
                answer.set_exception(SenderGone(f"the sender exited ({code})"))
        self._waiting.clear()

    async def close(self, timeout_s: float = 30.0) -> None:
        """End the sender's input: it finishes what it has, settles it, and exits."""
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            proc.kill()
        if self._reader is not None:
            await self._reader


async def serve(settings: Settings) -> None:
    """The sender's side: orders from stdin, replies to stdout, until stdin ends."""
    from clarion.providers.registry import build_clients
    from clarion.tables.ledger import ledger_for

    dispatcher = dispatcher_for(settings, build_clients(settings), ledger_for(settings))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0))
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(1, "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    running: set[asyncio.Task[Any]] = set()

    async def handle(batch_id: int, orders: list[Order]) -> None:
        try:
            replies = await dispatcher.run(orders)
        except Exception as exc:  # the ledger is unreachable: nothing was claimed or sent
            log.exception("dispatch failed for %d orders", len(orders))
            replies = [Reply("transient", f"dispatch_error: {exc!r}") for _ in orders]
        if not writer.is_closing():
            with contextlib.suppress(ConnectionError):
                writer.write(frame(_encode((batch_id, replies))))
                await writer.drain()

    while (payload := await read_frame(reader)) is not None:
        batch_id, orders = _orders.decode(payload)
        task = asyncio.create_task(handle(batch_id, orders))
        running.add(task)
        task.add_done_callback(running.discard)
    if running:
        event(log, "input ended: finishing the batches in hand", batches=len(running))
        await asyncio.gather(*running)
    await dispatcher.close()


def main() -> None:
    import uvloop

    logging.config.dictConfig(LOGGING_CONFIG)
    uvloop.run(serve(Settings.from_env()))


if __name__ == "__main__":
    main()
