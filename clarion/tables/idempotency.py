"""The dedupe window: client_id + idempotency_key -> the first notification_id.

Expiry is explicit (FAUST-NOTES: RocksDB's ttl would come back from the changelog):
each entry stores when it was seen and the partition it lives in, lookups ignore
expired entries, and `prune` deletes them with a changelog tombstone on that partition.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, Protocol

import msgspec


class Seen(msgspec.Struct, array_like=True):
    """What the table holds per key: the first notification id, when, and its partition."""

    nid: str
    ts: float
    p: int


_decode = msgspec.json.Decoder(Seen).decode
_encode = msgspec.json.Encoder().encode


class TableWriter(Protocol):
    """The part of ChangelogWriter (or a stand-in) the window needs."""

    table: Any

    def get(self, partition: int, key: bytes) -> bytes | None: ...
    def set(self, partition: int, key: bytes, value: bytes) -> None: ...
    def delete(self, partition: int, key: bytes) -> None: ...


def dedupe_key(client_id: str, idempotency_key: str) -> bytes:
    """The table key; a client's keys never collide with another client's."""
    return f"{client_id}\x1f{idempotency_key}".encode()


class IdempotencyWindow:
    """Remembers idempotency keys for `window_s` seconds."""

    def __init__(self, writer: TableWriter, window_s: float) -> None:
        self.writer = writer
        self.window_s = window_s

    def first_seen(self, partition: int, key: bytes, now: float) -> str | None:
        """The notification_id that first used `key` within the window, else None."""
        raw = self.writer.get(partition, key)
        if raw is None:
            return None
        seen = _decode(raw)
        return seen.nid if now - seen.ts < self.window_s else None

    def remember(self, key: bytes, notification_id: str, partition: int, now: float) -> None:
        self.writer.set(partition, key, _encode(Seen(notification_id, now, partition)))

    def prune(self, owned: Collection[int], now: float) -> int:
        """Delete expired keys of the partitions this worker owns; returns how many."""
        expired = [(key, seen.p) for key, seen in self._entries() if seen.p in owned and now - seen.ts >= self.window_s]
        for key, partition in expired:
            self.writer.delete(partition, key)
        return len(expired)

    def _entries(self) -> Iterable[tuple[bytes, Seen]]:
        for key, raw in list(self.writer.table.data.items()):
            yield key, _decode(raw)
