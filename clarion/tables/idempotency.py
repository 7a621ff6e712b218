"""The dedupe window: client_id + idempotency_key -> the first notification_id.

Expiry is explicit (FAUST-NOTES: RocksDB's ttl would come back from the changelog):
each entry stores when it was seen and the partition it lives in, lookups ignore
expired entries, and `prune` deletes them with a changelog tombstone on that partition.
"""

from __future__ import annotations

from collections.abc import Collection, MutableMapping
from typing import Any, Protocol


class ChangelogTable(Protocol):
    """The part of a faust Table that pruning needs."""

    data: MutableMapping[Any, Any]

    def items(self) -> Any: ...
    def send_changelog(
        self, partition: int | None, key: Any, value: Any, key_serializer: Any = ..., value_serializer: Any = ...
    ) -> Any: ...


def dedupe_key(client_id: str, idempotency_key: str) -> str:
    """The table key; a client's keys never collide with another client's."""
    return f"{client_id}\x1f{idempotency_key}"


class IdempotencyWindow:
    """Remembers idempotency keys for `window_s` seconds."""

    def __init__(self, table: MutableMapping[str, Any], window_s: float) -> None:
        self.table = table
        self.window_s = window_s

    def first_seen(self, key: str, now: float) -> str | None:
        """The notification_id that first used `key` within the window, else None."""
        entry = self.table.get(key)
        if entry is None or now - entry["ts"] >= self.window_s:
            return None
        return entry["nid"]

    def remember(self, key: str, notification_id: str, partition: int, now: float) -> None:
        self.table[key] = {"nid": notification_id, "ts": now, "p": partition}

    def prune(self, table: ChangelogTable, owned: Collection[int], now: float) -> int:
        """Delete expired keys of the partitions this worker owns; returns how many."""
        expired = [
            (key, entry["p"])
            for key, entry in list(table.items())
            if entry["p"] in owned and now - entry["ts"] >= self.window_s
        ]
        for key, partition in expired:
            # Explicit partition: a timer has no current event to take it from.
            table.send_changelog(partition, key, None, value_serializer="raw")
            table.data.pop(key, None)
        return len(expired)
