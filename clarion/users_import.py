"""`clarion users import FILE`: a JSON-lines file of users, posted to POST /users/bulk in chunks.

Each chunk is at most `chunk_lines` lines and CHUNK_BYTES bytes of the file, sent as is
(blank lines too), so the line numbers the API reports map back to the file's. A progress
bar on stderr shows lines done of the total and the rate.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import orjson

CHUNK_LINES = 5000
CHUNK_BYTES = 8 * 1024 * 1024  # well under the API's 64 MiB per request
SHOWN_ERRORS = 20


class ImportFailed(Exception):
    """The API refused a chunk as a whole (auth, scope, size) or could not be reached."""


@dataclass
class ImportReport:
    lines: int = 0  # lines of the file sent
    accepted: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)  # the first ones, with the file's line numbers


def count_lines(path: Path) -> int:
    """Lines in the file (a last line without a newline counts)."""
    lines, last = 0, b"\n"
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def chunks(path: Path, chunk_lines: int) -> Iterator[tuple[int, bytes]]:
    """(number of the chunk's first line, its bytes) for runs of at most chunk_lines lines and ~CHUNK_BYTES."""
    with path.open("rb") as f:
        first, lines, size, held = 1, 0, 0, []
        for line in f:
            held.append(line)
            lines += 1
            size += len(line)
            if lines >= chunk_lines or size >= CHUNK_BYTES:
                yield first, b"".join(held)
                first, lines, size, held = first + lines, 0, 0, []
        if held:
            yield first, b"".join(held)


class Progress:
    """`[#####-----]  5000/12000 lines  2431 lines/s` on one line of `out`, redrawn in place."""

    def __init__(self, total: int, out: TextIO = sys.stderr, width: int = 30) -> None:
        self.total, self.out, self.width = total, out, width
        self.started = time.monotonic()

    def show(self, done: int) -> None:
        filled = self.width * done // self.total if self.total else self.width
        rate = done / max(time.monotonic() - self.started, 1e-6)
        bar = "#" * filled + "-" * (self.width - filled)
        self.out.write(f"\r[{bar}] {done}/{self.total} lines  {rate:,.0f} lines/s")
        self.out.flush()

    def close(self) -> None:
        self.out.write("\n")
        self.out.flush()


async def import_users(
    path: Path, api_url: str, key: str, chunk_lines: int = CHUNK_LINES, on_chunk: Callable[[int], None] | None = None
) -> ImportReport:
    """Post the file to POST /users/bulk a chunk at a time; `on_chunk(lines done)` after each."""
    report = ImportReport()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"}
    url = api_url.rstrip("/") + "/users/bulk"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for first, body in chunks(path, chunk_lines):
            try:
                async with http.post(url, data=body, headers=headers) as resp:
                    raw = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ImportFailed(f"{url}: {type(exc).__name__}: {exc}") from None
            answer = _answer(raw)
            if resp.status != 200:
                raise ImportFailed(f"{url} answered {resp.status}: {answer.get('error', raw[:200])}")
            report.lines += body.count(b"\n") + (not body.endswith(b"\n"))
            report.accepted += answer["accepted"]
            report.rejected += answer["rejected"]
            room = SHOWN_ERRORS - len(report.errors)
            report.errors.extend({**e, "line": first + e["line"] - 1} for e in answer["errors"][: max(room, 0)])
            if on_chunk:
                on_chunk(report.lines)
    return report


def _answer(raw: bytes) -> dict[str, Any]:
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"error": raw[:200].decode(errors="replace")}
    return answer if isinstance(answer, dict) else {"error": str(answer)[:200]}
