"""A faust table's local store, read and written by explicit partition.

faust's RocksDB store keeps one database per partition and picks it from the event
being processed. clarion's stages handle several records (from several partitions) at
once, so they name the partition themselves; the in-memory store (agent tests) has one
dict for all partitions.
"""

from __future__ import annotations

from typing import Any

from clarion.topology import faust_compat


class PartitionedStore:
    def __init__(self, table: Any) -> None:
        self.table = table

    def _db(self, partition: int) -> Any:
        return faust_compat.partition_db(self.table.data, partition)

    def get(self, partition: int, key: bytes) -> bytes | None:
        db = self._db(partition)
        return db.get(key) if db is not None else self.table.data.get(key)

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        db = self._db(partition)
        if db is not None:
            db.put(key, value)
        else:
            self.table.data[key] = value

    def delete(self, partition: int, key: bytes) -> None:
        db = self._db(partition)
        if db is not None:
            db.delete(key)
        else:
            self.table.data.pop(key, None)

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.table.data.set_persisted_offset(tp, offset)

    def scan(self, partition: int, prefix: bytes, after: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to `limit` (key, value) pairs whose key starts with `prefix` and sorts after `after`, in key order."""
        db = self._db(partition)
        found: list[tuple[bytes, bytes]] = []
        if db is not None:
            for key, value in db.items(from_key=max(prefix, after)):
                if not key.startswith(prefix) or len(found) >= limit:
                    break
                if key > after:
                    found.append((key, value))
            return found
        data = self.table.data  # the in-memory store: every partition in one dict
        keys = sorted(k for k in data.keys() if k.startswith(prefix) and k > after)[:limit]
        return [(k, data[k]) for k in keys]

    def keys(self, partition: int) -> list[bytes]:
        """Every key of one partition (for small tables: campaigns, cursors); not faust's own offset key."""
        db = self._db(partition)
        if db is not None:
            offset_key = faust_compat.offset_key(self.table.data)
            return [key for key in db.keys() if key != offset_key]
        return list(self.table.data.keys())

    def estimated_keys(self) -> int:
        """About how many keys the partitions this worker serves hold: RocksDB's estimate, no scan (a key
        written again since the last compaction may count more than once), faust's offset key left out."""
        active_dbs = faust_compat.active_dbs(self.table.data)
        if active_dbs is None:
            return len(self.table.data)
        offset_key = faust_compat.offset_key(self.table.data)
        total = 0
        for db in active_dbs:
            keys = db.property_int_value("rocksdb.estimate-num-keys") or 0
            if offset_key is not None and db.get(offset_key) is not None:
                keys -= 1
            total += max(keys, 0)
        return total
