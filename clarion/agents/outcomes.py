"""Outcomes: fold every outcome into the status table, keyed by notification_id.

Each notification's document is read once, folded with all of its outcomes in the
records taken together, and written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import faust

from clarion.agents.guard import Part, guarded
from clarion.schemas.records import Outcome
from clarion.tables.status import StatusDoc, decode_status, encode_status, fold
from clarion.topology.outbox import Outbox

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

SOURCE = "outcomes"


def register(topo: Topology) -> None:
    writer = topo.writer(topo.status)

    async def handle(parts: Sequence[Part[Outcome]], out: Outbox) -> None:
        docs: dict[tuple[int, bytes], StatusDoc | None] = {}
        for part in parts:
            for outcome in part.items:
                where = (part.partition, outcome.notification_id.encode())
                if where not in docs:
                    raw = writer.get(*where)
                    docs[where] = decode_status(raw) if raw is not None else None
                docs[where] = fold(docs[where], outcome)
        for (partition, key), doc in docs.items():
            writer.set(partition, key, encode_status(doc))
        topo.counters[("status", "outcomes_folded")] += sum(len(part.items) for part in parts)
        await writer.flush()

    @topo.app.agent(topo.topics[SOURCE], name="clarion.outcomes.status")
    async def record_status(stream: faust.StreamT) -> None:
        await guarded(topo, SOURCE, stream, Outcome, handle)
