"""Which partition a key lives on, computed the way Kafka's default partitioner does.

clarion groups many items into one record per partition (a batch), so it picks the
partition itself instead of leaving it to the producer. It must pick exactly what the
Java client, aiokafka and faust pick for the same key (murmur2, positive, modulo the
partition count), or a batch would land where the tables for its users do not live.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import TypeVar

from aiokafka.partitioner import murmur2

T = TypeVar("T")


@lru_cache(maxsize=262_144)
def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives `key` among `partitions`."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def by_partition(items: Iterable[T], key_of: Callable[[T], str], partitions: int) -> dict[int, list[T]]:
    """Items grouped by the partition of their key, in their original order."""
    groups: dict[int, list[T]] = defaultdict(list)
    for item in items:
        groups[partition_for(key_of(item), partitions)].append(item)
    return groups
