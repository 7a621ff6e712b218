"""POST /users/bulk: many users in one request, as JSON lines read off the stream.

The body is one POST /users body per line (Content-Type application/x-ndjson). Lines are
read and validated one at a time, as they arrive: the body is never held whole, only one
line (at most `max_request_bytes`, POST /users's limit) and the users on their way to the
broker. Each line is checked like POST /users with the API key's client; a line naming
another client_id is an error for that line only. Blank lines are skipped.

Valid users are produced to the users topic as they come, one record per user (the topic
is compacted by user key), a batch at a time; the answer comes once every one is on the
broker: 200 {"accepted": n, "rejected": m, "errors": [{"line", "field", "error"}, ...]}
with the first MAX_ERRORS errors. A body over MAX_LINES lines or MAX_BODY_BYTES bytes is
read up to the limit and answered 413, with the counts of what was read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from clarion.schemas.codec import encode
from clarion.schemas.validation import ValidationFailed, validate_user
from clarion.web.context import CALLER, PRODUCER, SETTINGS, TOPICS, Rejected, requires
from clarion.web.ndjson import read_lines

MAX_LINES = 100_000
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_ERRORS = 100  # errors listed in the answer (every rejected line is counted)
PRODUCE_BATCH = 1000  # users sent before waiting for the previous batch's acknowledgements
CHUNK_BYTES = 64 * 1024
UTF8_BOM = b"\xef\xbb\xbf"
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")


class TooLarge(Exception):
    """The body went past MAX_LINES or MAX_BODY_BYTES: reading stopped there."""


class _UsersWriter:
    """Produce users to the users topic, keeping one batch in flight while the next is gathered."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer, self.topic = producer, topic
        self.gathering: list[asyncio.Future[Any]] = []
        self.in_flight: list[asyncio.Future[Any]] = []
        self.written = 0

    async def add(self, key: str, value: bytes) -> None:
        self.gathering.append(await self.producer.send(self.topic, value, key=key.encode()))
        if len(self.gathering) >= PRODUCE_BATCH:
            await self._settle(self.in_flight)
            self.in_flight, self.gathering = self.gathering, []

    async def flush(self) -> None:
        in_flight, gathering = self.in_flight, self.gathering
        self.in_flight, self.gathering = [], []
        await self._settle(in_flight)
        await self._settle(gathering)

    async def _settle(self, futures: list[asyncio.Future[Any]]) -> None:
        results = await asyncio.gather(*futures, return_exceptions=True)
        self.written += sum(not isinstance(r, BaseException) for r in results)
        if failed := next((r for r in results if isinstance(r, BaseException)), None):
            raise failed


class _Tally:
    def __init__(self) -> None:
        self.accepted = 0
        self.rejected = 0
        self.errors: list[dict[str, Any]] = []

    def reject(self, line: int, errors: list[dict[str, str]]) -> None:
        self.rejected += 1
        room = MAX_ERRORS - len(self.errors)
        self.errors.extend({"line": line, **e} for e in errors[:room])

    def body(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rejected": self.rejected, "errors": self.errors}


def _check_headers(request: web.Request) -> None:
    if request.content_type not in NDJSON_TYPES:
        raise Rejected(415, f"send JSON lines with Content-Type {NDJSON_TYPES[0]} (one user per line)", "Content-Type")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        raise Rejected(415, f"Content-Encoding {encoding[:40]!r} is not supported; send the body uncompressed", "body")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise Rejected(413, f"request body is over the {MAX_BODY_BYTES} byte limit; split it", "body")


async def _chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The body's chunks up to MAX_BODY_BYTES (the lines complete by then are read), then TooLarge."""
    room = MAX_BODY_BYTES
    async for chunk in request.content.iter_chunked(CHUNK_BYTES):
        if len(chunk) > room:
            if room:
                yield chunk[:room]
            raise TooLarge(f"request body is over the {MAX_BODY_BYTES} byte limit; lines after it were not read")
        room -= len(chunk)
        yield chunk


def _user_line(raw: bytes | None, client_id: str, line_limit: int) -> tuple[Any, list[dict[str, str]]]:
    """A line as a user (None for a blank line), or the errors that refuse it."""
    if raw is None:
        return None, [{"field": "body", "error": f"line is over the {line_limit} byte limit"}]
    text = raw.strip()
    if not text:
        return None, []
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return None, [{"field": "body", "error": f"not valid JSON: {exc}"}]
    if isinstance(body, dict) and "client_id" in body and body["client_id"] != client_id:
        return None, [{"field": "client_id", "error": "is not the API key's client (leave it out)"}]
    try:
        return validate_user(body, client_id), []
    except ValidationFailed as exc:
        return None, exc.errors


@requires("users")
async def post_users_bulk(request: web.Request) -> web.Response:
    _check_headers(request)
    client_id = request[CALLER].client_id
    line_limit = request.app[SETTINGS].max_request_bytes
    writer = _UsersWriter(request.app[PRODUCER], request.app[TOPICS]["users"])
    tally = _Tally()
    too_large: str | None = None
    number = 0
    try:
        try:
            async with aclosing(read_lines(_chunks(request), line_limit)) as lines:
                async for number, raw in lines:
                    if number > MAX_LINES:
                        raise TooLarge(f"at most {MAX_LINES} lines per request; lines from {number} on were not read")
                    if number == 1 and raw is not None:
                        raw = raw.removeprefix(UTF8_BOM)  # as some editors and spreadsheet exports write it
                    user, errors = _user_line(raw, client_id, line_limit)
                    if errors:
                        tally.reject(number, errors)
                    elif user is not None:
                        await writer.add(user.key, encode(user))
                        tally.accepted += 1
        except TooLarge as exc:
            too_large = str(exc)
        await writer.flush()
    except (web.RequestPayloadError, HttpProcessingError, ConnectionResetError) as exc:  # bad chunking, cut short
        await _flush(writer)
        raise Rejected(400, f"the body cannot be read after line {number}: {exc}", "body") from None
    except KafkaError as exc:
        await _flush(writer)
        raise Rejected(503, f"the broker did not take the users: {type(exc).__name__}; "
                       f"{writer.written} of the accepted lines were written") from None  # fmt: skip
    if too_large:
        body = {"error": too_large, **tally.body()}
        body["errors"] = [{"field": "body", "error": too_large}, *tally.errors]
        return web.Response(status=413, body=orjson.dumps(body), content_type="application/json")
    return web.Response(status=200, body=orjson.dumps(tally.body()), content_type="application/json")


async def _flush(writer: _UsersWriter) -> None:
    """Wait for what was sent before answering an error (the counts then say what was written)."""
    try:
        await writer.flush()
    except KafkaError:
        pass
