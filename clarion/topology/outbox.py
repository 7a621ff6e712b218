"""What handling one record produces, sent as one record per topic partition.

A stage that handles a batch of notifications emits many items (tasks per channel,
outcomes, retries). Sending each as its own Kafka record would cost a faust event per
item downstream and a broker batch per item on Tansu; the outbox groups items by topic
and partition and sends each group as one JSON array (split when it gets large).
Topics that are not batched (the DLQ) get one record per item.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from clarion.schemas.codec import encode_batch
from clarion.topology.catalog import TopicSpec
from clarion.topology.partitioning import partition_for


class Producing(Protocol):
    """What an outbox sends through (topology/emitters.py)."""

    specs: Mapping[str, TopicSpec]

    async def produce(self, name: str, key: str, value: bytes, partition: int | None = None) -> Awaitable[Any]: ...


MAX_RECORD_BYTES = 256 * 1024
T = TypeVar("T")


class Outbox:
    def __init__(self, producing: Producing) -> None:
        self.producing = producing
        self.groups: dict[tuple[str, int], tuple[str, list[bytes]]] = {}
        self.singles: list[tuple[str, str, bytes, int | None]] = []

    def add(self, name: str, key: str, item: bytes, partition: int | None = None) -> None:
        """Queue an encoded item for the catalog topic `name`, keyed by `key` (on `partition`, if given)."""
        spec = self.producing.specs[name]
        if not spec.batched:
            self.singles.append((name, key, item, partition))
            return
        group = (name, partition_for(key, spec.partitions) if partition is None else partition)
        entry = self.groups.get(group)
        if entry is None:
            self.groups[group] = (key, [item])
        else:
            entry[1].append(item)

    def __len__(self) -> int:
        return sum(len(items) for _, items in self.groups.values()) + len(self.singles)

    async def flush(self) -> None:
        """Hand everything to faust's producer (flushed before offsets are committed)."""
        send = self.producing.produce
        for (name, partition), (key, items) in self.groups.items():
            for chunk in split_by_size(items, len):
                await send(name, key, encode_batch(chunk), partition)
        for name, key, item, partition in self.singles:
            await send(name, key, item, partition)
        self.groups.clear()
        self.singles.clear()


def split_by_size(items: Sequence[T], size_of: Callable[[T], int]) -> list[list[T]]:
    """Split items into runs whose JSON array stays under MAX_RECORD_BYTES."""
    chunks: list[list[T]] = [[]]
    size = 0
    for item in items:
        item_size = size_of(item) + 1
        if chunks[-1] and size + item_size > MAX_RECORD_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += item_size
    return chunks
