"""Outcomes: fold every outcome into the status table, keyed by notification_id.

A record holds the outcomes of one batch for one outcome partition; each notification's
document is read, folded with all of its outcomes in the record, and written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import faust
import orjson

from clarion.agents.guard import guarded
from clarion.schemas.records import Outcome
from clarion.tables.status import fold
from clarion.topology.outbox import Outbox

if TYPE_CHECKING:
    from clarion.topology.topology import Topology

SOURCE = "outcomes"


def register(topo: Topology) -> None:
    writer = topo.writer(topo.status)

    async def handle(outcomes: Sequence[Outcome], ev: faust.EventT, out: Outbox) -> None:
        docs: dict[bytes, dict | None] = {}
        for outcome in outcomes:
            key = outcome.notification_id.encode()
            if key not in docs:
                raw = writer.get(key)
                docs[key] = orjson.loads(raw) if raw is not None else None
            docs[key] = fold(docs[key], outcome)
        partition = ev.message.partition
        for key, doc in docs.items():
            writer.set(partition, key, orjson.dumps(doc))
        await writer.flush()

    @topo.app.agent(topo.topics[SOURCE], name="clarion.outcomes.status")
    async def record_status(stream: faust.StreamT) -> None:
        await guarded(topo, SOURCE, stream, Outcome, handle)
