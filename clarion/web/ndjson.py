"""JSON lines read off a stream: one line at a time, never more than one line's bytes held.

A line over the size limit is not kept: its bytes are skipped up to its newline and it comes
back as None, so one oversized line costs only itself (an error for that line) and never the
memory of the process. Line numbers count every line (blank ones too) from 1, as an editor
shows them, so an error can name the line of the file it came from.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


async def read_lines(chunks: AsyncIterable[bytes], max_line_bytes: int) -> AsyncIterator[tuple[int, bytes | None]]:
    """(line number, the line without its newline) for each line of `chunks`; None for a line over the limit."""
    held = bytearray()
    number = 0
    oversized = False
    async for chunk in chunks:
        start = 0
        while (newline := chunk.find(b"\n", start)) >= 0:
            number += 1
            if not oversized and len(held) + newline - start <= max_line_bytes:
                held += chunk[start:newline]
                yield number, bytes(held)
            else:
                yield number, None
            held.clear()
            oversized = False
            start = newline + 1
        if not oversized:
            held += chunk[start:]
            if len(held) > max_line_bytes:
                oversized = True
                held.clear()
    if held or oversized:  # the last line, with no newline after it
        yield number + 1, None if oversized else bytes(held)
